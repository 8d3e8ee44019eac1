"""States files crafted as an attacker would: nothing in them may run, none may load.

Every ATTACKS row plants a command that creates a marker file, written the way
attackers write them (a class whose ``__reduce__`` or ``__reduce_ex__`` returns
the call, or pickle opcodes by hand), most of them inside an otherwise real
``(states, optimizer)`` file. MXNet's own ``Trainer.load_states`` runs every one
of them (``test_mxnet_runs_the_command``); ``adam_plugin.checkpoint.load_states``
must refuse each with a ``ValueError`` naming the callable, leave no marker and
change nothing in the Trainer.

The TAMPERED rows use only names a checkpoint holds, rebuilt as no checkpoint
rebuilds them: what a loader that trusted its allowlist by name alone would take.
"""
import copyreg
import functools
import logging
import os
import pickle
import pickletools
import subprocess

import numpy as np
import pytest
from mxnet import nd
from mxnet.ndarray.ndarray import NDArray

import adam_plugin
from adam_plugin import checkpoint
from checkpoints import (
    SAVE_AFTER,
    Call,
    Job,
    Rebuilt,
    assert_same,
    cycle,
    handle,
    inspect,
    put,
    row_sparse_bytes,
    save,
    setattrs,
    without,
)


class CallEx(Call):
    """The same gadget through ``__reduce_ex__``, which pickle asks first."""

    def __reduce_ex__(self, protocol):
        return self.func, self.args


def touch(marker):
    return f"touch {marker}"


def tampered(change):
    """A real file's ``(states, optimizer)`` after ``change(states, optimizer, marker)``."""
    def make(good, marker):
        states, optimizer = pickle.loads(good)  # our own file, just written
        return pickle.dumps(change(states, optimizer, marker) or (states, optimizer))
    return make


def whole_file(gadget):
    return lambda good, marker: pickle.dumps(gadget(marker))


def opcodes(program):
    return lambda good, marker: program.replace(b'CMD', touch(marker).encode())


# getattr(__import__('os'), 'system')('touch ...'), in protocol 0 opcodes.
GETATTR_CHAIN = (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR"
                 b"(VCMD\ntR.")
# The same, __import__ first: its result parked in the memo while getattr is pushed.
IMPORT_FIRST = (b"cbuiltins\n__import__\n(Vos\ntRp0\n0cbuiltins\ngetattr\n(g0\nVsystem\ntR"
                b"(VCMD\ntR.")
# os.system('touch ...') through the INST opcode of protocol 0.
INST = b"(VCMD\nios\nsystem\n."

# name -> (how to make the file from a real one and the marker, the callable named)
ATTACKS = {
    'whole_file_os_system': (whole_file(lambda m: Call(os.system, touch(m))), 'posix.system'),
    'state_subprocess_run': (tampered(lambda s, o, m: put(
        s, 0, Call(subprocess.run, ['touch', str(m)]))), 'subprocess.run'),
    'lr_scheduler_os_system': (tampered(lambda s, o, m: setattrs(
        o, lr_scheduler=Call(os.system, touch(m)))), 'posix.system'),
    'state_eval': (tampered(lambda s, o, m: put(
        s, 1, Call(eval, f"open({str(m)!r}, 'w').close()"))), 'builtins.eval'),
    'whole_file_exec': (whole_file(lambda m: Call(exec, f"import os; os.system('{touch(m)}')")),
                        'builtins.exec'),
    'getattr_chain': (opcodes(GETATTR_CHAIN), 'builtins.getattr'),
    'builtins_import': (opcodes(IMPORT_FIRST), 'builtins.__import__'),
    'inst_opcode': (opcodes(INST), 'os.system'),
    'copyreg_reconstructor': (tampered(lambda s, o, m: setattrs(o, lr_scheduler=Call(
        copyreg._reconstructor, logging.FileHandler, logging.FileHandler, str(m)))),
        'logging.FileHandler'),
    'reduce_ex': (tampered(lambda s, o, m: put(s, 0, (CallEx(os.system, touch(m)),))),
                  'posix.system'),
    'functools_partial': (whole_file(lambda m: Call(functools.partial(os.system, touch(m)))),
                          'functools.partial'),
    'numpy_object_array': (tampered(lambda s, o, m: put(
        s, 0, np.array([Call(os.system, touch(m))], dtype=object))),
        'numpy.core.multiarray._reconstruct'),
    'numpy_object_scalar': (tampered(lambda s, o, m: setattrs(o, lr=Call(
        np.core.multiarray.scalar, np.dtype(object), Call(os.system, touch(m))))),
        'posix.system'),
    'array_handle_gadget': (tampered(lambda s, o, m: put(s, 0, (Rebuilt(
        NDArray, (None,), {'handle': Call(os.system, touch(m))}),))), 'posix.system'),
    'scheduler_attribute_gadget': (tampered(lambda s, o, m: setattrs(
        o.lr_scheduler, on_step=Call(os.system, touch(m)))), 'posix.system'),
    'optimizer_idx2name_gadget': (tampered(lambda s, o, m: setattrs(
        o, idx2name={0: Call(os.system, touch(m))})), 'posix.system'),
}


def doubling(levels):
    """A tuple nesting of 2**levels leaves in ``levels`` objects: walked naively, it never ends."""
    nest = ()
    for _ in range(levels):
        nest = (nest, nest)
    return nest


# name -> (how to make the file from a real one and the marker, what the error says)
TAMPERED = {
    'scheduler_extra_attribute': (tampered(lambda s, o, m: setattrs(
        o.lr_scheduler, command=touch(m))),
        "its mxnet.lr_scheduler.FactorScheduler has attributes ['command']"),
    'optimizer_extra_attribute': (tampered(lambda s, o, m: setattrs(o, command=touch(m))),
                                  "MyAdam has attributes ['command']"),
    'optimizer_missing_attribute': (tampered(lambda s, o, m: without(o, 'idx2name')),
                                    "MyAdam is rebuilt without its attributes ['idx2name']"),
    'optimizer_called': (tampered(lambda s, o, m: (s, Call(adam_plugin.MyAdam, 0.5))),
                         "MyAdam is rebuilt by calling it with (0.5,)"),
    'array_garbage_bytes': (tampered(lambda s, o, m: put(s, 0, (Rebuilt(
        NDArray, (None,), {'handle': bytearray(np.random.default_rng(0).bytes(64))}),))),
        "an array's raw bytes are not an MXNet array"),
    'array_bytes_cut': (tampered(lambda s, o, m: put(s, 0, (Rebuilt(
        NDArray, (None,), {'handle': handle(s)[:-2]}),))), 'in the middle of the array'),
    'array_bytes_appended': (tampered(lambda s, o, m: put(s, 0, (Rebuilt(
        NDArray, (None,), {'handle': handle(s) + b'\0' * 4}),))), '4 bytes after the array'),
    'array_called_with_a_handle': (tampered(lambda s, o, m: put(s, 0, (Rebuilt(
        NDArray, (12345,), {'handle': handle(s)}),))),
        'mxnet.ndarray.ndarray.NDArray is rebuilt from arguments (12345,)'),
    'array_rows_out_of_range': (tampered(lambda s, o, m: put(s, 0, (Rebuilt(
        NDArray, (None,), {'handle': bytearray(row_sparse_bytes([1, 9]))}),))),
        'row_sparse rows do not fit its shape'),
    'array_class_of_other_storage': (tampered(lambda s, o, m: put(s, 0, (Rebuilt(
        NDArray, (None,), {'handle': bytearray(row_sparse_bytes([1, 3]))}),))),
        'NDArray is rebuilt from the bytes of a row_sparse array'),
    'numpy_object_dtype': (tampered(lambda s, o, m: setattrs(o, lr=Call(
        np.core.multiarray.scalar, np.dtype(object), touch(m)))),
        "numpy.dtype is rebuilt from ('O8', False, True)"),
    'bytearray_from_text': (tampered(lambda s, o, m: put(s, 0, (Rebuilt(
        NDArray, (None,), {'handle': Call(bytearray, touch(m), 'latin-1')}),))),
        "an array's raw bytes are not an MXNet array"),  # protocol 2's form; a shell command
    'array_as_hyperparameter': (tampered(lambda s, o, m: setattrs(o, lr=nd.ones(1))),
                                "attribute 'lr' of adam_plugin.optimizer.MyAdam holds "
                                "mxnet.ndarray.ndarray.NDArray, which does not belong there"),
    'attribute_contains_itself': (tampered(lambda s, o, m: setattrs(o, idx2name=cycle())),
                                  'it nests objects deeper than 128 levels'),
    'number_as_state': (tampered(lambda s, o, m: put(s, 0, 5)),
                        "has layout 'int', expected"),
    'number_as_lr_scheduler': (tampered(lambda s, o, m: setattrs(o, lr_scheduler=0)),
                               "'lr_scheduler' of adam_plugin.optimizer.MyAdam holds int, "
                               "not one of MXNet's schedulers"),
    'state_of_shared_nesting': (tampered(lambda s, o, m: put(s, 0, doubling(30))),
                                "has layout (((("),
}

FILES = {**ATTACKS, **TAMPERED}


def write(row, job, tmp_path):
    """The row's file, made from a real checkpoint of ``job``; and its marker."""
    _, good = save(job, tmp_path)
    marker = tmp_path / 'marker'
    fname = tmp_path / f'{row}.states'
    fname.write_bytes(FILES[row][0](good.read_bytes(), marker))
    return fname, marker


def updaters(trainer):
    return [trainer._kvstore._updater] if trainer._update_on_kvstore else trainer._updaters


@pytest.mark.parametrize('placement', ['one_device', 'two_devices_kvstore_updates'])
@pytest.mark.parametrize('row', FILES)
def test_refused_without_running_anything(row, placement, tmp_path):
    job = Job('everything', placement).train(range(1, SAVE_AFTER + 1))
    fname, marker = write(row, job, tmp_path)
    before = job.snapshot()
    optimizer = job.trainer.optimizer
    states = [u.states for u in updaters(job.trainer)]
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    message = str(err.value)
    assert FILES[row][1] in message
    assert str(fname) in message and message.endswith('The Trainer was not changed.')
    assert not marker.exists()
    assert job.trainer.optimizer is optimizer
    assert [u.optimizer for u in updaters(job.trainer)] == [optimizer] * len(states)
    assert all(u.states is s for u, s in zip(updaters(job.trainer), states, strict=True))
    assert_same(job.snapshot(), before)


@pytest.mark.parametrize('row', ATTACKS)
def test_mxnet_runs_the_command(row, tmp_path):
    """The attacks are real: MXNet's own loader runs every one (some then fail, too late)."""
    job = Job('everything', 'one_device').train(range(1, 3))
    fname, marker = write(row, job, tmp_path)
    try:
        job.trainer.load_states(str(fname))
    except Exception:  # what happens after the command does not matter
        pass
    assert marker.exists()


def test_copyreg_extension_codes_are_refused(tmp_path):
    """An EXT opcode names a callable by a number in copyreg's registry. Once any
    unpickler in the process has resolved the number, the answer is cached for all,
    past find_class: so such files are refused whether or not the number is known."""
    job = Job('everything', 'one_device').train(range(1, 3))
    marker, fname = tmp_path / 'marker', tmp_path / 'ext.states'
    copyreg.add_extension('posix', 'system', 0xF0)  # some library of the victim's did this
    try:
        fname.write_bytes(pickle.dumps(Call(os.system, touch(marker)), 2))
        assert 'EXT1' in [op.name for op, _, _ in pickletools.genops(fname.read_bytes())]
        for resolved_before in (False, True):
            if resolved_before:
                with pytest.raises(AttributeError):  # MXNet runs it, then fails on its result
                    job.trainer.load_states(str(fname))
                assert marker.exists()
                marker.unlink()
            with pytest.raises(ValueError, match='copyreg extension code 240'):
                checkpoint.load_states(job.trainer, fname)
            assert not marker.exists()
    finally:
        copyreg.remove_extension('posix', 'system', 0xF0)


@pytest.mark.parametrize('row', ['whole_file_os_system', 'lr_scheduler_os_system',
                                 'numpy_object_array', 'getattr_chain', 'array_garbage_bytes'])
def test_inspect_refuses_and_runs_nothing(row, tmp_path):
    job = Job('everything', 'one_device').train(range(1, 3))
    fname, marker = write(row, job, tmp_path)
    done = inspect(fname, '--json')
    assert (done.returncode, done.stdout) == (1, '')
    assert done.stderr.startswith(f"Invalid states file {str(fname)!r}: ")
    assert FILES[row][1] in done.stderr
    assert not marker.exists()
