"""The fixtures the test modules share. What else they share is in the helper modules beside
this file (configs, oracles, helpers, checkpoints, ...), which pytest finds: it puts this folder
on sys.path (its default import mode, prepend, for a folder without __init__.py)."""
import pytest
from hypothesis import Phase, settings
from hypothesis.internal.conjecture import providers as _providers

from adam_plugin import kernel
from configs import THOROUGH
from helpers import VARIANTS

# Property-based tests (tests/test_properties.py) run the same examples on every run and
# every machine: derandomized, no example database, a bounded number of examples, and no
# per-example deadline (a loaded CI machine must not turn slowness into a failure).
settings.register_profile('ci', derandomize=True, database=None, max_examples=60,
                          deadline=None, print_blob=True)
# tests/mutate.py: the same examples, a failure reported as found (shrinking one can take
# minutes, and a mutant needs only to fail).
settings.register_profile('mutate', parent=settings.get_profile('ci'),
                          phases=(Phase.explicit, Phase.generate))
# `make thorough` (configs.THOROUGH): the generated tests draw ten times as many examples.
settings.register_profile('thorough', parent=settings.get_profile('ci'), max_examples=600)
settings.load_profile('thorough' if THOROUGH else 'ci')

# Hypothesis (6.131 on) also draws literals it finds in the source of the local modules
# imported so far: the examples would then depend on which test modules a process collected
# (a pytest-xdist worker, one file, make mutants) and change with every mutant. Its pool of
# such constants is kept empty, so that a test draws the same examples in every run.
if hasattr(_providers, '_get_local_constants'):
    _providers._get_local_constants = lambda: _providers.Constants()


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
