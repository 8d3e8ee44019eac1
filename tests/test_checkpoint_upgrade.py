"""A states file saved by release 0.1.0 loads with this release and resumes training.

``tests/states/v0_1_0.*`` were written by ``tests/states/make_v0_1_0.py`` run on
release 0.1.0 (see that script for the job: row_sparse gradients, two devices, a
scheduler, a skipped NaN step). Every later
release must load it with both loaders, keep each parameter's own step count, and
resume as the same job trained straight through by this release. A file saved
before an option existed (here: the file with an attribute removed) loads with the
option's declared default.
"""
import importlib.util
import os
import pickle

import numpy as np
import pytest

from checkpoints import LOADERS, inspect

HERE = os.path.join(os.path.dirname(__file__), 'states')
_spec = importlib.util.spec_from_file_location('make_v0_1_0', os.path.join(HERE, 'make_v0_1_0.py'))
made = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(made)

STATES = os.path.join(HERE, 'v0_1_0.states')
# What 0.1.0 saved, by the script's job: per device, parameter index -> count. Index 1
# is the Dense weight (its NaN step skipped), 0 the Dense bias, 2 the Embedding.
COUNTS = {0: {0: 6, 1: 5, 2: 6}, 1: {0: 6, 1: 5, 2: 6}}


@pytest.fixture(scope='module')
def straight():
    """The job trained straight through by this release."""
    net, trainer = made.job()
    made.train(net, trainer, range(1, made.STEPS + 1))
    return made.weights(net)


@pytest.fixture(scope='module')
def from_file():
    """The job resumed from the 0.1.0 file itself, by each loader: what a file derived
    from it (another pickle protocol, an attribute removed) must resume to, bitwise."""
    return {loader: resumed(loader, STATES)[0] for loader in LOADERS}


def resumed(loader, states, steps=range(made.SAVE_AFTER + 1, made.STEPS + 1)):
    """The job loaded from the 0.1.0 checkpoint and ``states``, then trained ``steps``."""
    net, trainer = made.job()
    net.load_parameters(os.path.join(HERE, 'v0_1_0.params'), ctx=made.CTXS)
    LOADERS[loader](trainer, states)
    opt = trainer.optimizer
    assert opt._all_index_update_counts == COUNTS
    assert (opt.num_update, opt.lr_scheduler.count) == (6, 3)
    made.train(net, trainer, steps)
    return made.weights(net), opt


def assert_weights(got, want, **tol):
    assert got.keys() == want.keys() and len(want) == 3
    for name in want:
        if tol:
            np.testing.assert_allclose(got[name], want[name], err_msg=name, **tol)
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize('loader', LOADERS)
def test_the_file_of_0_1_0_loads_and_resumes(loader, straight):
    got, opt = resumed(loader, STATES)
    assert (opt.amsgrad, opt.epsilon_mode, opt.nonfinite, opt.num_skipped) == \
        (True, 'inside', 'skip', 2)  # one skip per device at the NaN step
    # This release trained straight: float32 rounding, not bits, since 0.1.0 rounded the
    # second moment as (1 - beta2) * (g * g) in the 4 steps before the save, this release as
    # ((1 - beta2) * g) * g (the overflow-safe order). Bitwise resumption of a file saved by
    # the same release is test_checkpoint's.
    assert_weights(got, straight, rtol=1e-6, atol=1e-7)
    # 0.1.0's own straight run, on whatever machine made it: a CPU with other vector
    # instructions takes another kernel variant, so float32 rounding, not bits.
    want = dict(np.load(os.path.join(HERE, 'v0_1_0.npz')))
    assert_weights(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(want['0.weight'], 0.1), 'nothing trained'


def older_file(tmp_path, attribute):
    """The 0.1.0 file as a release before ``attribute`` existed would have written it."""
    with open(STATES, 'rb') as f:
        states, opt = pickle.load(f)
    del opt.__dict__[attribute]
    fname = tmp_path / 'older.states'
    fname.write_bytes(pickle.dumps((states, opt)))
    assert attribute.encode() not in fname.read_bytes()
    return fname


@pytest.mark.parametrize('loader', LOADERS)
def test_a_file_from_before_an_option_loads_with_its_default_and_resumes(loader, from_file,
                                                                         tmp_path):
    got, opt = resumed(loader, older_file(tmp_path, 'nonfinite'))
    assert opt.nonfinite == 'skip' == type(opt).state_defaults['nonfinite']
    assert_weights(got, from_file[loader])


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('attribute', ['fused', 'num_skipped', 'aggregate_num'])
def test_a_file_without_an_attribute_loads_with_its_default(attribute, loader, tmp_path):
    """``MyAdam.state_defaults`` is the rule, for options and MyAdam's bookkeeping."""
    _, opt = resumed(loader, older_file(tmp_path, attribute), steps=[])
    assert getattr(opt, attribute) == type(opt).state_defaults[attribute]


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_of_the_file_loads(protocol, loader, from_file, tmp_path):
    """Protocols 0 to 2 name Python 2's modules (__builtin__, copy_reg), write bytes as
    _codecs.encode(text, 'latin1') and a bytearray from latin-1 text."""
    with open(STATES, 'rb') as f:
        fname = tmp_path / f'p{protocol}.states'
        fname.write_bytes(pickle.dumps(pickle.load(f), protocol))
    got, _ = resumed(loader, fname)
    assert_weights(got, from_file[loader])
    assert inspect(fname).returncode == 0


def test_a_protocol_0_file_names_python_2s_modules(tmp_path):
    with open(STATES, 'rb') as f:
        data = pickle.dumps(pickle.load(f), 0)
    for name in (b'__builtin__\nbytearray', b'copy_reg\n_reconstructor', b'_codecs\nencode'):
        assert name in data


# main at 1303d99 (tests/states/make_main_1303d99.py): states (m, v) and (master, (m, v)),
# the step counts only in the optimizer's per-device counts.
_spec = importlib.util.spec_from_file_location(
    'make_main_1303d99', os.path.join(HERE, 'make_main_1303d99.py'))
main_1303d99 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(main_1303d99)


@pytest.fixture(scope='module')
def straight_1303d99():
    """The job of the 1303d99 file trained straight through by this release, per layout."""
    runs = {}
    for layout in main_1303d99.LAYOUTS:
        net, trainer = main_1303d99.job(layout)
        main_1303d99.train(net, trainer, range(1, main_1303d99.STEPS + 1))
        runs[layout] = main_1303d99.weights(net)
    return runs


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('layout', main_1303d99.LAYOUTS)
def test_the_file_of_main_1303d99_resumes_in_every_layout(layout, loader, straight_1303d99):
    """Saved with the KVStore updating (the counts of one device), resumed into every
    layout: each parameter's step count comes from the saved counts on every device."""
    made_by = main_1303d99
    net, trainer = made_by.job(layout)
    net.load_parameters(os.path.join(HERE, f'{made_by.NAME}.params'),
                        ctx=made_by.LAYOUTS[layout][0])
    LOADERS[loader](trainer, os.path.join(HERE, f'{made_by.NAME}.states'))
    made_by.train(net, trainer, range(made_by.SAVE_AFTER + 1, made_by.STEPS + 1))
    got = made_by.weights(net)
    want = straight_1303d99[layout]
    assert got.keys() == want.keys()
    for key in want:  # every device as the straight run's device 0
        np.testing.assert_array_equal(got[key], want[key.split('@')[0] + '@0'], err_msg=key)
    # The straight run of 1303d99 itself, on whatever machine made it (another kernel
    # variant on other vector instructions): float16 rounding.
    saved = dict(np.load(os.path.join(HERE, f'{made_by.NAME}.npz')))
    for key in got:
        np.testing.assert_allclose(got[key], saved[key.split('@')[0] + '@0'], rtol=1e-3,
                                   err_msg=key)
    assert not np.any(saved['w@0'] == np.float16(0.25)), 'nothing trained'
