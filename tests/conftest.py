import os
import sys

import pytest

# tests/ holds the oracles next to the tests that use them.
sys.path.insert(0, os.path.dirname(__file__))

SHAPES = [(3, 4, 5), (10, 4), (7,)]

from configs import TOL  # noqa: E402,F401  (the tests import it from here)


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(1234)

# Property-based tests (tests/test_properties.py) run the same examples on every run and
# every machine: derandomized, no example database, a bounded number of examples, and no
# per-example deadline (a loaded CI machine must not turn slowness into a failure).
from hypothesis import Phase, settings  # noqa: E402

settings.register_profile('ci', derandomize=True, database=None, max_examples=60,
                          deadline=None, print_blob=True)
# tests/mutate.py: the same examples, a failure reported as found (shrinking one can take
# minutes, and a mutant needs only to fail).
settings.register_profile('mutate', parent=settings.get_profile('ci'),
                          phases=(Phase.explicit, Phase.generate))
# `make thorough` (ADAM_PLUGIN_THOROUGH=1): the generated tests draw ten times as many examples.
THOROUGH = os.environ.get('ADAM_PLUGIN_THOROUGH') == '1'
settings.register_profile('thorough', parent=settings.get_profile('ci'), max_examples=600)
settings.load_profile('thorough' if THOROUGH else 'ci')

# Hypothesis (6.131 on) also draws literals it finds in the source of the local modules
# imported so far: the examples would then depend on which test modules a process collected
# (a pytest-xdist worker, one file, make mutants) and change with every mutant. Its pool of
# such constants is kept empty, so that a test draws the same examples in every run.
from hypothesis.internal.conjecture import providers as _providers  # noqa: E402

if hasattr(_providers, '_get_local_constants'):
    _providers._get_local_constants = lambda: _providers.Constants()


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
