"""What a states file costs to refuse or load is bounded by its size.

An array referenced many times (pickle's BINGET) is parsed once; an object nested
deeper than the loader's limit (10**5 or 10**6 tuples deep as a dict key, which
crashed the process when the dict hashed it) is refused by the pre-scan of the
opcodes, before anything is unpickled, by ``load_states`` and by ``inspect``.
A file is read up to the end of its pickle and no further: bytes after it are
refused by the file's size, unread, and a file larger than the Trainer's states
can be is refused before it is read at all (here a 2 GiB hole after a genuine
file, which was read whole: 15 s and 2 GB of memory). What was read is this
process's own count of bytes read (``/proc/self/io``), not a clock.
"""
import os
import pickle
import threading

import numpy as np
import pytest
from mxnet import autograd, gluon, nd

import adam_plugin
from adam_plugin import checkpoint
from adam_plugin.checkpoint import rawarray, safe
from checkpoints import Job, assert_same, inspect, save

DEEP = 'it nests objects deeper than 128 levels (or in themselves); refused before unpickling'


def trainer(shape):
    param = gluon.Parameter('w', shape=shape)
    param.initialize()
    return gluon.Trainer([param], 'myadam', {})


def deep_key_file(path, depth):
    """``({0: {((...((),)...),): 1}}, MyAdam())``, the key ``depth`` tuples deep (TUPLE1
    opcodes spliced in: pickling such a tuple would itself recurse)."""
    data = pickle.dumps(({0: 'PLACEHOLDER'}, adam_plugin.MyAdam()), 3)
    marker = b'X\x0b\x00\x00\x00PLACEHOLDER'
    assert data.count(marker) == 1
    path.write_bytes(data.replace(marker, b'})' + b'\x85' * depth + b'K\x01s'))
    return path


@pytest.mark.parametrize('depth', [10**5, 10**6])
def test_deep_nesting_is_refused_before_unpickling(depth, tmp_path, monkeypatch):
    fname = deep_key_file(tmp_path / 'deep.states', depth)

    def unpickled(*args):
        raise AssertionError('unpickled')

    monkeypatch.setattr(safe._Unpickler, 'load', unpickled)
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(trainer((2,)), fname)
    assert DEEP in str(err.value)
    done = inspect(fname)
    assert done.returncode == 1 and DEEP in done.stderr


def test_nesting_under_the_pre_scans_limit_is_refused_by_the_checks_after_it(tmp_path):
    fname = deep_key_file(tmp_path / 'deep.states', 40)
    with pytest.raises(ValueError, match='nested deeper than 32 levels'):
        checkpoint.load_states(trainer((2,)), fname)


def test_an_array_referenced_many_times_is_parsed_once(tmp_path, monkeypatch):
    rows = 1000
    array = nd.sparse.row_sparse_array((np.ones((rows, 1), 'float32'), np.arange(rows)),
                                       shape=(rows, 1))
    fname = tmp_path / 'referenced.states'
    fname.write_bytes(pickle.dumps(({0: (array,) * 2000}, adam_plugin.MyAdam()), 3))
    assert fname.stat().st_size < 2 * len(array.__getstate__()['handle'])  # BINGETs
    calls = []
    parse = rawarray.parse
    monkeypatch.setattr(rawarray, 'parse', lambda raw: calls.append(1) or parse(raw))
    with pytest.raises(ValueError, match="the state of parameter 'w' has layout"):
        checkpoint.load_states(trainer((rows, 1)), fname)
    assert len(calls) == 1
    calls.clear()
    assert inspect(fname).returncode == 0 and len(calls) == 1


def bytes_read():
    """The bytes this process has read so far (``rchar``: every read call, files and pipes)."""
    with open('/proc/self/io') as f:
        return int(dict(line.split(': ') for line in f)['rchar'])


def with_hole(tmp_path, hole):
    """A genuine states file of a small Trainer followed by ``hole`` zero bytes that take no
    disk (a sparse file), and a Trainer it was saved from."""
    job = Job('defaults', 'one_device').train(range(1, 3))
    _, fname = save(job, tmp_path)
    os.truncate(fname, fname.stat().st_size + hole)
    return job, fname


def test_a_file_larger_than_the_trainers_states_is_refused_before_reading(tmp_path):
    job, fname = with_hole(tmp_path, 2 << 30)
    before, read = job.snapshot(), bytes_read()
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    assert bytes_read() - read < 1 << 20
    assert f"it is {fname.stat().st_size} bytes, more than a states file for these " \
        "parameters holds (" in str(err.value)
    assert "at most); refused before reading it. The Trainer was not changed." in str(err.value)
    assert_same(job.snapshot(), before)


# Under the limit of the job's Trainer (the allowance alone is 16 MiB).
HOLE = 12 << 20
AFTER = 'it is corrupted (bytes after the end of the pickle)'


def test_bytes_after_the_pickle_are_refused_unread(tmp_path):
    job, fname = with_hole(tmp_path, HOLE)
    before, read = job.snapshot(), bytes_read()
    with pytest.raises(ValueError, match=r'\(bytes after the end of the pickle\)'):
        checkpoint.load_states(job.trainer, fname)
    assert bytes_read() - read < 1 << 20
    assert_same(job.snapshot(), before)
    read = bytes_read()
    done = inspect(fname)
    assert bytes_read() - read < 1 << 20
    assert done.returncode == 1 and AFTER in done.stderr


@pytest.mark.parametrize('extra', [b'', b'\0' * (1 << 20)])
def test_a_file_that_cannot_seek_is_read_to_the_end_of_its_pickle(extra, tmp_path):
    """A named pipe has no size to judge by: one byte past the pickle is read."""
    job, fname = with_hole(tmp_path, 0)
    data = fname.read_bytes() + extra
    pipe = tmp_path / 'pipe.states'
    os.mkfifo(pipe)

    def write():
        with open(pipe, 'wb') as f:
            try:
                f.write(data)
            except BrokenPipeError:  # the loader stopped reading
                pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    resumed = Job('defaults', 'one_device')
    if extra:
        with pytest.raises(ValueError, match=r'\(bytes after the end of the pickle\)'):
            checkpoint.load_states(resumed.trainer, pipe)
    else:
        checkpoint.load_states(resumed.trainer, pipe)
        assert resumed.trainer.optimizer.num_update == 2
    writer.join(30)
    assert not writer.is_alive()


def float16_amsgrad_trainer():
    """A float16 weight with multi_precision and AMSGrad: four float32 arrays of its shape
    in its state, the most MyAdam keeps."""
    param = gluon.Parameter('w', shape=(1000, 1000), dtype='float16')
    param.initialize()
    return gluon.Trainer([param], 'myadam', {'multi_precision': True, 'amsgrad': True})


@pytest.mark.slow
def test_the_largest_state_in_the_longest_pickle_loads(tmp_path):
    """Zeros in pickle protocol 0, which writes each zero byte of an array as 6 bytes."""
    trainer = float16_amsgrad_trainer()
    param, = trainer._params
    with autograd.record():
        loss = param.data().astype('float32').sum()
    loss.backward()
    trainer.step(1)
    fname = tmp_path / 'trainer.states'
    trainer.save_states(str(fname))
    states, optimizer = pickle.loads(fname.read_bytes())
    master, (*moments, count) = states[0]  # (master, (m, v, vmax, [t]))
    for array in (master, *moments):
        array[:] = 0
    fname.write_bytes(pickle.dumps((states, optimizer), 0))
    assert fname.stat().st_size > 96 * 10**6
    loaded = float16_amsgrad_trainer()
    checkpoint.load_states(loaded, fname)
    master, (*moments, count) = loaded._updaters[0].states[0]
    assert [a.shape for a in (master, *moments)] == [(1000, 1000)] * 4
    assert not any(a.asnumpy().any() for a in (master, *moments))
    assert count == [1]
