"""The fixtures the test modules share. What else they share is in the helper modules beside
this file (configs, oracles, helpers, checkpoints, ...), which pytest finds: it puts this folder
on sys.path (its default import mode, prepend, for a folder without __init__.py)."""
import pytest
from hypothesis import settings

from adam_plugin import kernel
from helpers import VARIANTS

# Property-based tests (tests/test_properties.py) run the same examples on every run and
# every machine: derandomized, no example database, a bounded number of examples, and no
# per-example deadline (a loaded CI machine must not turn slowness into a failure).
settings.register_profile('ci', derandomize=True, database=None, max_examples=60,
                          deadline=None, print_blob=True)
settings.load_profile('ci')


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(1234)


# The quick tier runs the variant the kernel chose at load, on float32 (float64 on the kernel:
# test_properties); the full one runs every variant on both.
@pytest.fixture(params=[v if v == kernel.variant() else pytest.param(v, marks=pytest.mark.slow)
                        for v in VARIANTS])
def variant(request):
    """Each variant of the kernel's loops this CPU runs, in turn, for the test."""
    previous = kernel.use_variant(request.param)
    yield request.param
    kernel.use_variant(previous)
