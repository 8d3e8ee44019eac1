"""Properties of the bookkeeping around the update: a states file's step counts, the classes
a user allows in one, and what the pre-scan of a file costs.

- Step counts: a file's ``num_update`` and its per-index (``_index_update_count``) and
  per-device (``_all_index_update_counts``) counts are drawn, valid and not, with the largest
  count put on purpose in a device other than the first, in the per-index counts only, in
  both; ``num_update`` at, one below and above it. Both loaders (``Trainer.load_states``,
  through ``MyAdam.__setstate__``, and ``adam_plugin.checkpoint.load_states``) accept exactly
  the files a model written here accepts and refuse the others naming what is wrong,
  leaving the Trainer as it was.
- Allowed classes: programs of ``add_safe_globals``, nested ``with safe_globals([...])``
  blocks left normally or by an exception, ``clear_safe_globals`` and loads of files naming
  a user's class; after each step the allowed classes equal a model's (PyTorch's semantics:
  a block allows its classes inside it, and leaving it restores the list it found) and a
  file loads exactly when its class is allowed.
- The pre-scan's cost: pickles built to be expensive (deep chains, ladders of shared
  objects, one object held by many and then deepened again and again, wide lists) of a
  few kilobytes; the lines of Python the pre-scan (and the whole safe read) executes are
  counted and must stay under a linear function of the file's size.
"""
import pickle
import pickletools
import struct
import sys

import mxnet as mx
import pytest
from hypothesis import example, given, strategies as st
from mxnet import gluon

import adam_plugin
from adam_plugin import checkpoint
from adam_plugin.checkpoint import safe

# --- step counts ---------------------------------------------------------------------------------

COUNT_OK = st.integers(1, 10**6)
COUNT_BAD = st.one_of(st.integers(-5, 0), st.just(True), st.just(2.0), st.just('3'), st.none())
KEY_BAD = st.one_of(st.integers(-5, -1), st.just('0'), st.just(1.5))  # (True would be the key 1)


@st.composite
def counts_files(draw):
    """``(num_update, _all_index_update_counts, _index_update_count)`` as a file may hold
    them, and what is wrong with them (None: nothing) as the names a refusal must carry."""
    devices = draw(st.integers(1, 3))
    per_device = {d: draw(st.dictionaries(st.integers(0, 5), COUNT_OK, max_size=4))
                  for d in range(devices)}
    index = dict(per_device[0])  # MXNet's: the current device's dict (device 0 by default)
    where = draw(st.sampled_from(['device', 'index', 'both', 'nowhere']))
    top = draw(st.integers(2, 10**6))
    if where in ('device', 'both'):  # the largest on a device other than the first, if any
        per_device[devices - 1][draw(st.integers(0, 5))] = top
    if where in ('index', 'both'):
        index[draw(st.integers(0, 5))] = top
    wrong = []
    flaw = draw(st.sampled_from([None] * 8 + ['count', 'key', 'device key', 'no device']))
    if flaw in ('count', 'key'):  # a count or an index no file of MXNet's holds
        target = draw(st.sampled_from([per_device[draw(st.integers(0, devices - 1))], index]))
        if flaw == 'count':
            target[draw(st.integers(0, 5))] = draw(COUNT_BAD)
        else:
            target[draw(KEY_BAD)] = 1
        wrong.append('_all_index_update_counts' if target is not index else '_index_update_count')
    elif flaw == 'device key':
        per_device[draw(KEY_BAD)] = {}
        wrong.append('_all_index_update_counts')
    elif flaw == 'no device':
        per_device.clear()
        wrong.append('_all_index_update_counts')
    highest = max([c for d in per_device.values() for c in d.values() if _good_count(c)]
                  + [c for c in index.values() if _good_count(c)], default=0)
    num_update = draw(st.one_of(st.sampled_from([highest, max(highest - 1, 0), highest + 1]),
                                st.integers(0, 2 * 10**6)))
    if draw(st.integers(0, 9)) == 0:
        num_update = draw(st.sampled_from([-1, 1.0, None, True]))
    if not (type(num_update) is int and num_update >= 0):
        wrong.append('num_update')
    elif not wrong and num_update < highest:
        wrong.append('num_update')
    begin = draw(st.one_of(st.integers(0, 10), st.sampled_from([-1, 0.0, None, False])))
    if not (type(begin) is int and begin >= 0):
        wrong.append('begin_num_update')
    return num_update, begin, per_device, index, wrong


def _good_count(count):
    return type(count) is int and count >= 1


@pytest.fixture(scope='module')
def trainer():
    param = gluon.Parameter('w', shape=(3,))
    param.initialize(mx.init.One())
    return gluon.Trainer([param], 'myadam', {'learning_rate': 0.1})


def states_file(num_update, begin, per_device, index):
    """A states file as Trainer.save_states writes it, with these counts."""
    opt = adam_plugin.MyAdam(learning_rate=0.1)
    opt.__dict__.update(num_update=num_update, begin_num_update=begin,
                        _all_index_update_counts=per_device, _index_update_count=index)
    return pickle.dumps(({}, opt))


@given(file=counts_files())
@example(file=(4, 0, {0: {0: 4}, 1: {0: 5}}, {0: 4}, ['num_update']))  # a device past it
@example(file=(5, 0, {0: {0: 5}, 1: {0: 5}}, {0: 5}, []))
def test_a_files_step_counts_load_exactly_when_consistent(file, trainer, tmp_path_factory):
    """MXNet keeps ``num_update`` at the largest count it made, on any device and index (an
    lr_scheduler reads it): a file with a count above it, or a count, key or
    ``begin_num_update`` that is not one, is refused by both loaders, naming it; every other
    loads with its counts as saved."""
    num_update, begin, per_device, index, wrong = file
    data = states_file(num_update, begin, per_device, index)
    fname = tmp_path_factory.mktemp('counts') / 'f.states'
    fname.write_bytes(data)
    before = trainer.optimizer
    for load in (lambda: pickle.loads(data)[1], lambda: checkpoint.load_states(trainer, fname)
                 or trainer.optimizer):
        if wrong:
            with pytest.raises(ValueError) as err:
                load()
            assert any(f'Invalid {name}' in str(err.value) for name in wrong), (
                wrong, str(err.value))
            assert trainer.optimizer is before
        else:
            opt = load()
            assert (opt.num_update, opt.begin_num_update, opt._all_index_update_counts,
                    opt._index_update_count) == (num_update, begin, per_device, index)
            trainer._optimizer = before  # each example starts from the same Trainer
            for updater in trainer._updaters:
                updater.optimizer = before


# --- the classes a user allows -------------------------------------------------------------------

class Halving:
    """A scheduler of the user's own (a plain object)."""

    def __init__(self, base_lr=0.01):
        self.base_lr = base_lr

    def __call__(self, num_update):
        return self.base_lr * 0.5 ** (num_update // 3)


class Stepped(Halving):
    pass


class Cosine(Halving):
    pass


CLASSES = [Halving, Stepped, Cosine]
classes = st.lists(st.sampled_from(CLASSES), min_size=1, max_size=3)
OPERATIONS = st.one_of(
    st.tuples(st.just('add'), classes), st.tuples(st.just('enter'), classes),
    st.tuples(st.just('exit'), st.booleans()), st.tuples(st.just('clear')),
    st.tuples(st.just('load'), st.sampled_from(CLASSES)))


def file_with(cls):
    opt = adam_plugin.MyAdam(learning_rate=0.1)
    opt.lr_scheduler = cls()
    return pickle.dumps(({}, opt))


@given(program=st.lists(OPERATIONS, max_size=12))
@example(program=[('add', [Halving]), ('enter', [Halving]), ('exit', False), ('load', Halving)])
@example(program=[('add', [Halving]), ('enter', [Stepped, Halving]), ('exit', True),
                  ('load', Halving), ('load', Stepped)])
@example(program=[('enter', [Halving]), ('add', [Stepped]), ('enter', [Cosine]), ('clear',),
                  ('load', Halving), ('exit', False), ('load', Cosine), ('exit', False),
                  ('load', Stepped)])
def test_allowed_classes_follow_nested_blocks_and_process_wide_calls(program, trainer,
                                                                     tmp_path_factory):
    folder = tmp_path_factory.mktemp('allowed')
    files = {}
    for cls in CLASSES:
        files[cls] = folder / f'{cls.__name__}.states'
        files[cls].write_bytes(file_with(cls))
    model, saved, blocks = [], [], []
    checkpoint.clear_safe_globals()
    try:
        for operation in program:
            name = operation[0]
            if name == 'add':
                checkpoint.add_safe_globals(operation[1])
                model += [c for c in dict.fromkeys(operation[1]) if c not in model]
            elif name == 'enter':
                block = checkpoint.safe_globals(operation[1])
                block.__enter__()
                blocks.append(block)
                saved.append(list(model))
                model += [c for c in dict.fromkeys(operation[1]) if c not in model]
            elif name == 'exit' and blocks:
                block = blocks.pop()
                if operation[1]:  # left by an exception raised inside the block, not swallowed
                    assert not block.__exit__(KeyError, KeyError('inside'), None)
                else:
                    block.__exit__(None, None, None)
                model = saved.pop()
            elif name == 'clear':
                checkpoint.clear_safe_globals()
                model = []
            elif name == 'load':
                cls = operation[1]
                if cls in model:
                    checkpoint.load_states(trainer, files[cls])
                    assert type(trainer.optimizer.lr_scheduler) is cls
                else:
                    with pytest.raises(ValueError, match=f'{cls.__name__}, which is not allowed'):
                        checkpoint.load_states(trainer, files[cls])
            assert checkpoint.get_safe_globals() == model, (operation, model)
    finally:
        while blocks:
            blocks.pop().__exit__(None, None, None)
        checkpoint.clear_safe_globals()


# --- what the pre-scan costs -----------------------------------------------------------------------

def put(i):
    return b'r' + struct.pack('<I', i)  # LONG_BINPUT: memo indices of our own


def get(i):
    return b'j' + struct.pack('<I', i)  # LONG_BINGET


MARK, LIST, EMPTY_LIST, EMPTY_TUPLE, TUPLE1, APPEND, POP = b'(', b'l', b']', b')', b'\x85', b'a', b'0'
BASE = 10**6  # memo indices far from those pickle gives the rest of the file


def chain(depth):
    """A tuple ``depth`` tuples deep."""
    return EMPTY_TUPLE + TUPLE1 * depth


def ladder(depth):
    """``x[i + 1] = [x[i], x[i]]``: each level holds the one below twice (through the memo)."""
    out = EMPTY_LIST + put(BASE) + POP
    for i in range(1, depth + 1):
        out += MARK + get(BASE + i - 1) * 2 + LIST + put(BASE + i) + POP
    return out + get(BASE + depth)


def star(holders, deepenings):
    """One list held by ``holders`` lists, then made one level deeper ``deepenings`` times:
    each deepening reaches every holder again."""
    shared, chains = BASE, BASE + 1
    out = EMPTY_LIST + put(shared) + POP + (MARK + get(shared) + LIST + POP) * holders
    out += EMPTY_LIST + put(chains) + POP
    for k in range(1, deepenings + 1):
        out += get(shared) + get(chains + k - 1) + APPEND + POP
        out += MARK + get(chains + k - 1) + LIST + put(chains + k) + POP
    return out + get(shared)


def deepened_ladder(depth, deepenings):
    """A ladder (above) on a list it shares, then that list made one level deeper
    ``deepenings`` times: each deepening climbs the ladder, whose every level is reached by
    two paths (2**depth paths to the top)."""
    base, chains = BASE, BASE + 2 * depth + 10
    out = EMPTY_LIST + put(base) + POP
    for i in range(1, depth + 1):
        out += MARK + get(base + i - 1) * 2 + LIST + put(base + i) + POP
    out += EMPTY_LIST + put(chains) + POP
    for k in range(1, deepenings + 1):
        out += get(base) + get(chains + k - 1) + APPEND + POP
        out += MARK + get(chains + k - 1) + LIST + put(chains + k) + POP
    return out + get(base + depth)


def wide(items):
    return MARK + EMPTY_TUPLE * items + LIST


def whole(fragment):
    return b'\x80\x02' + fragment + b'.'


class OverBudget(Exception):
    pass


def lines_run(function, data, budget):
    """The lines of Python ``function(data)`` runs in safe.py and pickletools.py (whose
    genops the pre-scan reads the opcodes with); OverBudget as soon as they exceed
    ``budget`` (a run that would not end, ends)."""
    files = {safe.__file__, pickletools.__file__}
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == 'line':
            count += 1
            if count > budget:
                raise OverBudget(count)
        return local

    def new_frame(frame, event, arg):
        return local if frame.f_code.co_filename in files else None

    previous = sys.gettrace()
    sys.settrace(new_frame)
    try:
        function(data)
    except safe.Refused:
        pass
    finally:
        sys.settrace(previous)
    return count


# Per opcode the pre-scan runs a constant number of lines (about 40 with genops'); an object
# made deeper after others came to hold it passes the change on to them, each at most
# MAX_PICKLE_DEPTH times (then the file is refused), about 8 lines each time. A holder is
# at least one opcode of the file.
PER_BYTE = 48
PER_BYTE_DEEPENED = PER_BYTE + 8 * safe.MAX_PICKLE_DEPTH
START = 5000  # the first call's own lines

FAMILIES = st.one_of(
    st.tuples(st.just('chain'), st.integers(10, 6000)).map(
        lambda f: (f, chain(f[1]), PER_BYTE)),
    st.tuples(st.just('ladder'), st.integers(5, 160)).map(
        lambda f: (f, ladder(f[1]), PER_BYTE)),
    st.tuples(st.just('wide'), st.integers(10, 6000)).map(lambda f: (f, wide(f[1]), PER_BYTE)),
    st.tuples(st.just('star'), st.integers(1, 600), st.integers(1, 126)).map(
        lambda f: (f, star(f[1], f[2]), PER_BYTE_DEEPENED)),
    st.tuples(st.just('deepened ladder'), st.integers(1, 40), st.integers(1, 80)).map(
        lambda f: (f, deepened_ladder(f[1], f[2]), PER_BYTE_DEEPENED)))


@given(family=FAMILIES)
@example(family=(('ladder', 120), ladder(120), PER_BYTE))
@example(family=(('star', 600, 126), star(600, 126), PER_BYTE_DEEPENED))
@example(family=(('deepened ladder', 30, 20), deepened_ladder(30, 20), PER_BYTE_DEEPENED))
def test_the_pre_scan_costs_at_most_a_linear_function_of_the_size(family):
    name, fragment, per_byte = family
    data = whole(fragment)
    budget = START + per_byte * len(data)
    lines_run(safe._prescan, data, budget)  # OverBudget fails the test


def states_with(fragment):
    """A states file holding ``fragment`` as parameter 0's state."""
    data = pickle.dumps(({0: 'PLACEHOLDER'}, adam_plugin.MyAdam()), 2)
    marker = b'X\x0b\x00\x00\x00PLACEHOLDER'
    assert data.count(marker) == 1
    return data.replace(marker, fragment)


@given(family=FAMILIES)
@example(family=(('ladder', 30), ladder(30), PER_BYTE))
@example(family=(('deepened ladder', 20, 5), deepened_ladder(20, 5), PER_BYTE_DEEPENED))
def test_reading_a_file_costs_at_most_a_linear_function_of_its_size(family):
    """The whole safe read (pre-scan, unpickling into records, the checks after) of a states
    file holding such a structure: refused or not, in lines bounded by its size (a ladder of
    shared lists under the checks' depth limit is checked once per list, not per path)."""
    name, fragment, per_byte = family
    data = states_with(fragment)
    reference = lambda cls: adam_plugin.MyAdam()  # noqa: E731
    budget = 4 * START + 2 * per_byte * len(data)
    lines_run(lambda d: safe.read(d, [adam_plugin.MyAdam], reference), data, budget)
