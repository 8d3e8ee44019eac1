"""States files tampered record by record: each refused with the message that names what is wrong.

Every row starts from a file a real ``Trainer.save_states`` wrote and changes one
record of it the way no checkpoint is written (an attribute of the wrong type, a
dict where a number goes, a nesting deeper than the optimizer's, an object built
twice or made with ``NEWOBJ`` instead of called, bytes after the pickle's end, an
extension code). ``checkpoint.load_states`` must refuse it with a ``ValueError``
saying exactly that, and leave the Trainer as it was; the same file written
differently but faithfully (pickle protocol 5) still loads.
"""
import copyreg
import io
import itertools
import pickle
import pickletools
import struct

import numpy as np
import pytest
from mxnet import nd
from mxnet.optimizer import SGD, Optimizer

import adam_plugin
from adam_plugin import checkpoint
from adam_plugin.checkpoint import safe
from checkpoints import (
    Call,
    Job,
    Rebuilt,
    assert_same,
    cycle,
    handle,
    put,
    row_sparse_bytes,
    save,
    setattrs,
    without,
)
from helpers import state_arrays

OPT = 'adam_plugin.optimizer.MyAdam'
ARRAY = 'mxnet.ndarray.ndarray.NDArray'
PLACEHOLDER = 'spliced in by hand'


def spliced(make, fragment):
    """A protocol 3 pickle of ``make(states, optimizer)``, with the opcodes that push
    PLACEHOLDER replaced by ``fragment(states, optimizer)``: what pickle itself never writes."""
    def write(good):
        states, optimizer = pickle.loads(good)
        data = pickle.dumps(make(states, optimizer), 3)
        ops = list(pickletools.genops(data))
        for (_, arg, pos), (_, _, end) in itertools.pairwise(ops):
            if arg == PLACEHOLDER:
                return data[:pos] + fragment(*pickle.loads(good)) + data[end:]
        raise AssertionError('no placeholder')
    return write


def body(obj):
    """The opcodes that push ``obj``, without the PROTO header and STOP."""
    return pickle.dumps(obj, 3)[2:-1]


def newobj_bytearray(states, optimizer):
    """``bytearray.__new__(bytearray, raw)`` (NEWOBJ): the bytes are never put in."""
    raw = bytes(handle(states))
    return b'cbuiltins\nbytearray\nB' + struct.pack('<I', len(raw)) + raw + b'\x85\x81'


def newobj_optimizer(states, optimizer):
    """``MyAdam.__new__(MyAdam, 0.5)`` (NEWOBJ with an argument), then its real state."""
    return (b'cadam_plugin.optimizer\nMyAdam\n' + body(0.5) + b'\x85\x81'
            + body(optimizer.__reduce_ex__(3)[2]) + b'b')


def resaved(change, protocol=None):
    """The real file after ``change(states, optimizer)`` (which may return a new pair)."""
    def write(good):
        states, optimizer = pickle.loads(good)  # our own file, just written
        return pickle.dumps(change(states, optimizer) or (states, optimizer), protocol)
    return write


def built_twice(which):
    """The real file, with one more ``BUILD`` of an empty dict after its ``which``-th
    (-1: the optimizer's, the last) on the object just built."""
    def write(good):
        data = pickle.dumps(pickle.loads(good), 3)
        ends = [pos + 1 for op, _, pos in pickletools.genops(data) if op.name == 'BUILD']
        return data[:ends[which]] + b'}b' + data[ends[which]:]
    return write


def nested(levels, state):
    for _ in range(levels):
        state = (state,)
    return state


# name -> (how to make the file from the real one's bytes, the message: the whole
# problem, or with a trailing '...' its start)
ROWS = {
    # safe.read: the file as a whole
    'bytes_after_the_pickle': (lambda good: good + b'\0',
                               'it is corrupted (bytes after the end of the pickle)'),
    'without_its_stop': (lambda good: good[:-1],
                         'it is truncated or corrupted (unpickling failed: '
                         'ValueError: pickle exhausted before seeing STOP)'),
    'three_elements': (resaved(lambda s, o: (s, o, 0)),
                       'it does not hold (states, optimizer) as Trainer.save_states '
                       'writes them (found tuple)'),
    'states_not_a_dict': (resaved(lambda s, o: (list(s.values()), o)),
                          'it does not hold (states, optimizer) as Trainer.save_states '
                          'writes them (found tuple)'),
    'second_element_a_dict': (resaved(lambda s, o: (s, o.__reduce_ex__(3)[2])),
                              'it does not hold (states, optimizer) as Trainer.save_states '
                              'writes them (its second element is dict, not an optimizer)'),
    'index_a_string': (resaved(lambda s, o: ({'0': s[0], 1: s[1]}, o)),
                       "it holds a state for parameter index '0'"),
    'name_not_allowed': (resaved(lambda s, o: put(s, 0, Call(len, 'abc'))),
                         'it names builtins.len, which is not allowed (refused, nothing from '
                         'the file was run; a class you trust may be allowed: '
                         'adam_plugin.checkpoint.add_safe_globals([cls]), or '
                         "'with adam_plugin.checkpoint.safe_globals([cls]):', or inspect's "
                         "--allow)"),
    # the states: MXNet arrays in tuples, and MyAdam's step count [t] at the end, nothing
    # else, no deeper than MAX_DEPTH; an int elsewhere is refused for its layout
    'text_in_a_state': (resaved(lambda s, o: put(s, 0, (s[0][0], 'x'))),
                        'the state of parameter index 0 holds str, not an MXNet array'),
    'number_in_a_state': (resaved(lambda s, o: put(s, 0, (s[0][0], 5))),
                          "the state of parameter 'B' has layout (((1,), 'float32', "
                          "'default'), 'int'), expected ..."),
    'number_as_a_state': (resaved(lambda s, o: put(s, 1, 5)),
                          "the state of parameter 'W' has layout 'int', expected ..."),
    'step_count_not_in_a_list': (resaved(lambda s, o: put(s, 1, s[1][:3] + (5,))),
                                 "the state of parameter 'W' has layout (((2, 1), 'float32', "
                                 "'default'), ((2, 1), 'float32', 'default'), ((2, 1), "
                                 "'float32', 'default'), 'int'), expected ..."),
    'step_count_in_a_tuple': (resaved(lambda s, o: put(s, 1, s[1][:3] + ((5,),))),
                              "the state of parameter 'W' has layout (((2, 1), 'float32', "
                              "'default'), ((2, 1), 'float32', 'default'), ((2, 1), "
                              "'float32', 'default'), ('int',)), expected ..."),
    'step_count_negative': (resaved(lambda s, o: put(s, 1, s[1][:3] + ([-1],))),
                            "Invalid step count of parameter 'W': -1 (expected an int >= 0)"),
    'step_count_a_float': (resaved(lambda s, o: put(s, 1, s[1][:3] + ([2.0],))),
                           'the state of parameter index 1 holds float, not an MXNet array'),
    'step_count_of_two': (resaved(lambda s, o: put(s, 1, s[1][:3] + ([1, 2],))),
                          "the state of parameter 'W' has layout (((2, 1), 'float32', "
                          "'default'), ((2, 1), 'float32', 'default'), ((2, 1), "
                          "'float32', 'default'), ['int', 'int']), expected ..."),
    'step_count_by_a_call': (resaved(lambda s, o: put(s, 1, s[1][:3] + ([Call(int, '7')],))),
                             "it calls builtins.int with '7', which no checkpoint does"),
    # an object inside itself: the pre-scan refuses it before unpickling
    'state_contains_itself': (resaved(lambda s, o: put(s, 0, cycle())),
                              'it nests objects deeper than 128 levels (or in themselves); '
                              'refused before unpickling'),
    'state_nested_33_deep': (resaved(lambda s, o: put(s, 0, nested(31, s[0]))),  # (.., [t])
                             'the state of parameter index 0 is nested deeper than 32 '
                             'levels (or contains itself)'),
    # ... nested 32 deep, it passes the walk and is refused for its layout
    'state_nested_32_deep': (resaved(lambda s, o: put(s, 0, nested(30, s[0]))),
                             "the state of parameter 'B' has layout ((((((..."),
    'none_in_a_state': (resaved(lambda s, o: put(s, 1, (s[1][0], s[1][1], None))),
                        "the state of parameter 'W' has layout (((2, 1), 'float32', "
                        "'default'), ((2, 1), 'float32', 'default'), 'NoneType'), expected "
                        "(((2, 1), 'float32', 'default'), ((2, 1), 'float32', 'default'), "
                        "((2, 1), 'float32', 'default'), ['int'])"),
    # an array: NDArray(None), then __setstate__({'handle': bytearray(raw bytes)})
    'array_handle_a_number': (resaved(lambda s, o: put(s, 0, (Rebuilt(
        nd.NDArray, (None,), {'handle': 5}),))),
        f'{ARRAY} is rebuilt with a handle of int, which no checkpoint does'),
    'array_handle_a_dtype': (resaved(lambda s, o: put(s, 0, (Rebuilt(
        nd.NDArray, (None,), {'handle': np.dtype('f4')}),))),
        f'{ARRAY} is rebuilt with a handle of numpy.dtype, which no checkpoint does'),
    'array_state_extra_key': (resaved(lambda s, o: put(s, 0, (Rebuilt(
        nd.NDArray, (None,), {'handle': handle(s), 'x': 1}),))),
        f'{ARRAY} is rebuilt with state {{...'),
    'array_garbage_bytes': (resaved(lambda s, o: put(s, 0, (Rebuilt(
        nd.NDArray, (None,), {'handle': bytearray(b'\x12' * 64)}),))),
        "an array's raw bytes are not an MXNet array: ..."),
    'array_of_other_storage': (resaved(lambda s, o: put(s, 0, (Rebuilt(
        nd.NDArray, (None,), {'handle': bytearray(row_sparse_bytes([1, 3]))}),))),
        f'{ARRAY} is rebuilt from the bytes of a row_sparse array, which no checkpoint does'),
    # bytearray(text, 'latin-1') is how protocols 0 to 2 write it; no other encoding
    'bytearray_from_text': (resaved(lambda s, o: put(s, 0, (Rebuilt(
        nd.NDArray, (None,), {'handle': Call(bytearray, 'abc', 'utf-8')}),))),
        "builtins.bytearray is rebuilt from arguments ('abc', 'utf-8'), "
        "which no checkpoint does"),
    'bytearray_with_state': (resaved(lambda s, o: put(s, 0, (Rebuilt(
        nd.NDArray, (None,), {'handle': Rebuilt(bytearray, (bytes(handle(s)),), {'x': 1})}),))),
        "builtins.bytearray is rebuilt from arguments (b'..."),
    'bytearray_newobj': (spliced(lambda s, o: put(s, 0, (Rebuilt(
        nd.NDArray, (None,), {'handle': PLACEHOLDER}),)) or (s, o), newobj_bytearray),
        "builtins.bytearray is rebuilt from arguments (b'..."),
    'array_built_twice': (built_twice(0), f'it builds {ARRAY} twice'),
    # the optimizer: MyAdam.__new__(MyAdam), then exactly its attributes, plain data
    'optimizer_built_twice': (built_twice(-1), f'it builds {OPT} twice'),
    'optimizer_called': (resaved(lambda s, o: (s, Call(adam_plugin.MyAdam, 0.5))),
                         f'{OPT} is rebuilt by calling it with (0.5,), which no checkpoint does'),
    'optimizer_newobj_with_argument': (spliced(lambda s, o: (s, PLACEHOLDER), newobj_optimizer),
                                       f'{OPT} is rebuilt by calling it with (0.5,), which no '
                                       'checkpoint does'),
    'optimizer_attribute_not_a_string': (resaved(lambda s, o: o.__dict__.update({1: 0})),
                                         f'{OPT} is rebuilt with state {{...'),
    'optimizer_extra_attributes': (resaved(lambda s, o: setattrs(o, z_cmd=1, a_cmd=2)),
                                   f"its {OPT} has attributes ['a_cmd', 'z_cmd'], which this "
                                   "release's MyAdam does not know"),
    'optimizer_extra_and_missing': (resaved(lambda s, o: setattrs(o, cmd=1) or without(o, 'fused')),
                                    f"its {OPT} has attributes ['cmd'], which this release's "
                                    "MyAdam does not know"),
    # an option may be missing (a file from before it existed: see test_checkpoint_upgrade),
    # MXNet's own bookkeeping may not
    'optimizer_missing_attributes': (resaved(lambda s, o: without(o, 'num_update') or without(
        o, 'idx2name')), f"{OPT} is rebuilt without its attributes ['idx2name', 'num_update'], "
                         "which no checkpoint does"),
    'array_in_a_hyperparameter': (resaved(lambda s, o: setattrs(o, lr=[1.0, (nd.ones(1),)])),
                                  f"attribute 'lr' of {OPT} holds {ARRAY}, which does not "
                                  "belong there"),
    'array_as_a_dict_value': (resaved(lambda s, o: setattrs(o, idx2name={0: nd.ones(1)})),
                              f"attribute 'idx2name' of {OPT} holds {ARRAY}, which does not "
                              "belong there"),
    'hyperparameter_contains_itself': (resaved(lambda s, o: setattrs(o, idx2name=cycle())),
                                       'it nests objects deeper than 128 levels (or in '
                                       'themselves); refused before unpickling'),
    'number_as_lr_scheduler': (resaved(lambda s, o: setattrs(o, lr_scheduler=0)),
                               f"attribute 'lr_scheduler' of {OPT} holds int, not one of "
                               "MXNet's schedulers (a class you trust may be allowed: ..."),
    'array_as_lr_scheduler': (resaved(lambda s, o: setattrs(o, lr_scheduler=nd.ones(1))),
                              f"attribute 'lr_scheduler' of {OPT} holds {ARRAY}, not one of "
                              "MXNet's schedulers (a class you trust may be allowed: ..."),
    'optimizer_as_lr_scheduler': (resaved(lambda s, o: setattrs(
        o, lr_scheduler=adam_plugin.MyAdam())),
        f"attribute 'lr_scheduler' of {OPT} holds {OPT}, not one of MXNet's schedulers (a class "
        "you trust may be allowed: ..."),
}


def refused(job, data, tmp_path):
    """The problem ``load_states`` names for ``data``, checking it changed nothing."""
    fname = tmp_path / 'bad.states'
    fname.write_bytes(data)
    before = states(job)
    optimizer = job.trainer.optimizer
    held = job.trainer._updaters[0].states
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    prefix, suffix = f"Invalid states file {str(fname)!r}: ", '. The Trainer was not changed.'
    message = str(err.value)
    assert message.startswith(prefix) and message.endswith(suffix), message
    assert job.trainer.optimizer is optimizer and job.trainer._updaters[0].states is held
    after = states(job)
    assert after.keys() == before.keys()
    assert all((a == b).all() for i in before for a, b in zip(after[i], before[i], strict=True))
    return message[len(prefix):-len(suffix)]


@pytest.mark.parametrize('row', ROWS)
def test_a_tampered_record_is_refused_by_name(row, tmp_path):
    job = Job('everything', 'one_device').train(range(1, 3))
    _, good = save(job, tmp_path)
    make, want = ROWS[row]
    names = [p.name for p in job.trainer._params]
    want = want.replace("'B'", repr(names[0])).replace("'W'", repr(names[1]))
    got = refused(job, make(good.read_bytes()), tmp_path)
    if want.endswith('...'):
        assert got.startswith(want[:-3]), got
    else:
        assert got == want


@pytest.mark.parametrize('row', ['everything', 'multi_precision'])
def test_a_protocol_5_file_loads(row, tmp_path):
    """Protocol 5 writes an array's bytes as a bytearray itself, not ``bytearray(bytes)``."""
    job = Job(row, 'one_device').train(range(1, 3))
    _, good = save(job, tmp_path)
    saved = job.snapshot()
    data = resaved(lambda s, o: None, protocol=5)(good.read_bytes())
    assert 'BYTEARRAY8' in [op.name for op, _, _ in pickletools.genops(data)]
    job.train(range(3, 5))
    (tmp_path / 'p5.states').write_bytes(data)
    checkpoint.load_states(job.trainer, tmp_path / 'p5.states')
    now = job.snapshot()
    assert_same({k: now[k] for k in ('states', 'counts', 'num_update')},
                {k: saved[k] for k in ('states', 'counts', 'num_update')})


def test_an_extension_code_is_refused_before_it_is_looked_up(tmp_path):
    job = Job('everything', 'one_device').train(range(1, 3))
    _, good = save(job, tmp_path)
    copyreg.add_extension('builtins', 'len', 0xF1)
    try:
        data = resaved(lambda s, o: put(s, 0, Call(len, 'abc')), protocol=2)(good.read_bytes())
        assert 'EXT1' in [op.name for op, _, _ in pickletools.genops(data)]
        assert refused(job, data, tmp_path) == ('it names a callable by copyreg extension code '
                                                '241 (EXT1), which no checkpoint does')
    finally:
        copyreg.remove_extension('builtins', 'len', 0xF1)


def test_a_shared_nesting_is_walked_once():
    """Each container the file shares is checked once: 3**12 paths, one leaf visit."""
    leaf, seen = object(), []
    nest = (leaf,)
    for _ in range(12):
        nest = (nest, [nest], {0: nest})
    safe._walk(nest, lambda value, where: seen.append((value, where)), 'here')
    assert seen == [(leaf, 'here')] + [(0, 'here')] * 12


class PerIndex(SGD):
    """An optimizer whose state depends on the parameter's index (and an option of its own)."""

    def __init__(self, extra=1, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra

    def create_state(self, index, weight):
        return tuple(nd.zeros(weight.shape, weight.context) for _ in range(index + self.extra))


@pytest.fixture
def per_index():
    Optimizer.opt_registry['perindex_records_test'] = PerIndex
    try:
        job = Job('defaults', 'one_device')
        job.trainer = type(job.trainer)(job.net.collect_params(), PerIndex(learning_rate=0.1))
        yield job.train(range(1, 3))
    finally:
        del Optimizer.opt_registry['perindex_records_test']


def states(job):
    return {i: state_arrays(s) for i, s in job.trainer._updaters[0].states.items()}


def test_states_are_created_for_their_own_index(per_index, tmp_path):
    _, good = save(per_index, tmp_path)
    saved = states(per_index)
    assert [len(saved[i]) for i in (0, 1)] == [1, 2]
    per_index.train(range(3, 5))
    checkpoint.load_states(per_index.trainer, good)
    now = states(per_index)
    assert now.keys() == saved.keys()
    for i in saved:
        assert len(now[i]) == len(saved[i])
        for got, want in zip(now[i], saved[i], strict=True):
            assert (got == want).all()


def test_an_optimizer_that_cannot_create_a_state_is_named(per_index, tmp_path):
    _, good = save(per_index, tmp_path)
    data = resaved(lambda s, o: setattrs(o, extra='1'))(good.read_bytes())
    name = per_index.trainer._params[0].name
    assert refused(per_index, data, tmp_path) == (
        f"its optimizer cannot create a state for parameter '{name}' (TypeError: unsupported "
        "operand type(s) for +: 'int' and 'str')")


def test_a_persistent_id_is_refused(tmp_path):
    """pickle's persistent ids name outside objects; a Trainer checkpoint has none."""
    job = Job('defaults', 'one_device').train(range(1, 3))
    _, good = save(job, tmp_path)

    class WithPersistentId(pickle.Pickler):
        def persistent_id(self, obj):
            return 'an outside object' if isinstance(obj, dict) and not obj else None

    def write(good):
        buffer = io.BytesIO()
        WithPersistentId(buffer, 3).dump(({0: {}}, pickle.loads(good)[1]))
        return buffer.getvalue()

    data = write(good.read_bytes())
    assert 'BINPERSID' in [op.name for op, _, _ in pickletools.genops(data)]
    assert refused(job, data, tmp_path) == 'it holds a persistent id, which no checkpoint holds'


def test_a_numpy_dtype_hyperparameter_is_rebuilt(tmp_path):
    """A NumPy dtype where a user put one (in an unchecked attribute) comes back equal."""
    job = Job('defaults', 'one_device').train(range(1, 3))
    job.trainer.optimizer.idx2name = {0: np.dtype('float16')}
    _, fname = save(job, tmp_path)
    job.trainer.optimizer.idx2name = {}
    checkpoint.load_states(job.trainer, fname)
    assert job.trainer.optimizer.idx2name == {0: np.dtype('float16')}
    assert type(job.trainer.optimizer.idx2name[0]) is type(np.dtype('float16'))
