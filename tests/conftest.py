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

# Property-based tests (tests/test_properties.py) run the same examples on every run and
# every machine: derandomized, no example database, a bounded number of examples, and no
# per-example deadline (a loaded CI machine must not turn slowness into a failure).
from hypothesis import settings  # noqa: E402

settings.register_profile('ci', derandomize=True, database=None, max_examples=60,
                          deadline=None, print_blob=True)
settings.load_profile('ci')


def register_custom_op(name, make):
    """Register with MXNet, as ``name``, a custom operator of one input and one output of
    the input's shape, whose work is the ``mx.operator.CustomOp`` that ``make()`` returns."""
    import mxnet as mx

    class Prop(mx.operator.CustomOpProp):
        def __init__(self):
            super().__init__(need_top_grad=True)

        def list_arguments(self):
            return ['data']

        def list_outputs(self):
            return ['output']

        def infer_shape(self, in_shape):
            return in_shape, in_shape, []

        def create_operator(self, ctx, shapes, dtypes):
            return make()

    mx.operator.register(name)(Prop)
