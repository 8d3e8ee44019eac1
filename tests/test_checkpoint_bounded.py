"""What a states file costs to refuse or load is bounded by its size.

An array referenced many times (pickle's BINGET) is parsed once; an object nested
deeper than the loader's limit (10**5 or 10**6 tuples deep as a dict key, which
crashed the process when the dict hashed it) is refused by the pre-scan of the
opcodes, before anything is unpickled, by ``load_states`` and by ``inspect``.
"""
import pickle

import numpy as np
import pytest
from mxnet import gluon, nd

import adam_plugin
from adam_plugin import checkpoint
from adam_plugin.checkpoint import rawarray, safe
from test_checkpoint import inspect

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
