import os
import sys

import pytest

# tests/ holds the oracles next to the tests that use them.
sys.path.insert(0, os.path.dirname(__file__))

SHAPES = [(3, 4, 5), (10, 4), (7,)]

# Per-dtype tolerances for agreement with an oracle after 20 steps.
TOL = {
    'float32': dict(rtol=1e-5, atol=2e-6),
    'float64': dict(rtol=1e-10, atol=1e-12),
}


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(1234)
