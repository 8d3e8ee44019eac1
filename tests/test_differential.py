"""One differential harness: every route of an update call against the textbook rule.

Hypothesis draws the whole input of an update call (``MyAdam.update_multi_precision`` of a
list of parameters): the storage (float16 with and without a float32 master copy, float32,
float64), one to three parameters of one to four dimensions, dense or row_sparse weights
(storing every row, or not), dense or row_sparse gradients holding any subset of the rows,
``lazy_update`` on and off, every option combination (``configs.option_rows``), a step count
and moments from anywhere in a run, and values with subnormals and signed zeros. The corner
cases are built on purpose, never hoped for:

- Yogi's tie ``g * g == v``: ``v`` set to the square of the gradient as the rule computes it
  (in the compute type, after rescaling, weight decay and clipping);
- a second moment that overflows, placed in a chosen element of a chosen 1024-element block
  of the float16 loops (any block, not only the last) or of a chosen piece;
- NaN or Inf at a chosen position of a chosen parameter's gradient (the first or last
  element, either side of a piece's or a block's end, anywhere);
- lazy rows of a length that does not divide the kernel's piece size, so that pieces start
  inside rows; weights of three and four dimensions, whose rows hold several elements each.

Each case then runs through the textbook route (``fused=False``, the ground truth) and the
kernel, the kernel several times: with the production settings (the widest variant, the
real 2^18-element pieces and 2^20-element thread threshold), and on every ISA variant this
CPU runs, with small pieces (``set_piece_size``: every array crosses pieces) on one to three
threads (``PARALLEL_MIN`` 0). Every kernel run must give the same bits; the first must equal
the textbook route's weights, moments, master copies, step counts, skips, warnings and
errors, bit for bit where the kernel performs the textbook's operations in its order
(float32, both float16 storages) and to a few units in the last place for float64
(``configs.STEP_TOL``). The textbook route itself is held to what the case was built to
show (a skipped parameter untouched, an overflow reported) and, for ordinary values, to the
NumPy oracle. MXNet's operator (the route without the kernel) and the queued KVStore step
have their own tests below, on the same cases.
"""
import contextlib
import dataclasses
import math
import warnings

import mxnet as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from mxnet import gluon, nd

from adam_plugin import MyAdam, dispatch, kernel, textbook
from configs import (
    BITWISE,
    HUGE_FOR_FLOAT16,
    LEARNING_RATES_INF_IN_FLOAT16,
    LEARNING_RATES_INF_IN_FLOAT32,
    OPERATOR_TOL,
    ORACLE_TOL,
    RESCALE_GRADS,
    STEP_TOL,
    THOROUGH,
    finite_in,
    option_rows,
)
from oracles import NumpyAdam

VARIANTS = [v for v in kernel.variants() if kernel.runs_here(v)]
PIECE = 1 << 18  # the kernel's piece of work by default (CHUNK in _kernel.cpp)
BLOCK = 1024  # the float16 loops' block (adam_half in _kernel.cpp)
PRODUCTION = (VARIANTS[0], 1, PIECE, kernel.PARALLEL_MIN)  # (variant, threads, piece, PARALLEL_MIN)

# storage -> (the weights' dtype, multi_precision)
STORAGES = {'float16': (np.float16, False), 'float16_master': (np.float16, True),
            'float32': (np.float32, False), 'float64': (np.float64, False)}
MXNET_ADVICE = 'Accumulating with float16 in optimizer can lead to poor accuracy'

# Examples per test in the quick tier; `make thorough` (ADAM_PLUGIN_THOROUGH=1) runs 10 times more.
SCALE = 10 if THOROUGH else 1


def examples(n):
    return settings(max_examples=n * SCALE, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])


# --- a case: the inputs of one update call ----------------------------------------------------

@dataclasses.dataclass
class Param:
    """One parameter of the call, as NumPy arrays (the dense view of a row_sparse weight)."""
    shape: tuple
    weight: str  # 'dense', 'row_sparse' (storing every row), 'row_sparse_missing' (not)
    rows: object  # None: a dense gradient; else the rows a row_sparse gradient stores
    w: np.ndarray
    g: np.ndarray  # dense, or the stored rows' values
    m: np.ndarray
    v: np.ndarray
    vmax: np.ndarray
    master: object  # the float32 master copy (float16_master), else None
    t: int  # the step count this update makes
    stored: tuple = ()  # the rows a 'row_sparse_missing' weight stores

    @property
    def row_length(self):
        return math.prod(self.shape[1:])


@dataclasses.dataclass
class Case:
    storage: str
    options: dict  # MyAdam keyword arguments
    params: list
    bad: set  # parameters whose gradient holds NaN or Inf where the routes read it
    overflow: set  # parameters built so that a second moment overflows
    exact_ties: bool  # Yogi's ties are ties in float64 too (the oracle agrees on them)
    runs: list  # the kernel's settings, each (variant, threads, piece, PARALLEL_MIN)
    nonfinite_weights: bool = False  # some weights may be Inf or NaN already

    @property
    def dtype(self):
        return np.dtype(STORAGES[self.storage][0])

    @property
    def compute(self):
        return np.dtype(np.float64 if self.storage == 'float64' else np.float32)

    @property
    def state_dtype(self):
        return np.dtype(np.float32) if self.storage == 'float16_master' else self.dtype


def magnitudes(rng, size, low, high):
    """``size`` values of random sign, spread over the decades from ``low`` to ``high``."""
    return rng.choice([-1.0, 1.0], size) * 10.0 ** rng.uniform(math.log10(low), math.log10(high),
                                                               size)


def sprinkle(draw, rng, array, dtype):
    """Subnormals and signed zeros at a few drawn positions of ``array`` (flat view)."""
    tiny = np.finfo(dtype).smallest_subnormal
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, array.size - 1)) if array.size else None
        if at is not None:
            array.flat[at] = draw(st.sampled_from([0.0, -0.0, float(tiny), -float(tiny),
                                                   float(tiny) * 7, float(np.finfo(dtype).tiny)]))
    return array


# Shapes: the first dimension is the rows of a row_sparse weight or gradient; rows of one
# to many elements, some longer than a float16 block (two blocks in a lazy row).
ROW_SHAPES = st.one_of(st.just(()), st.tuples(st.integers(1, 9)),
                       st.tuples(st.integers(1, 4), st.integers(1, 5)),
                       st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4)),
                       st.sampled_from([(BLOCK + 37,), (3, 700)]))


@st.composite
def shapes(draw, sparse, blocks=False):
    """1-D to 4-D; dense parameters of up to a few thousand elements. ``blocks``: more than
    one float16 block (in a row of a row_sparse one)."""
    if sparse:
        row = draw(st.sampled_from([(BLOCK + 37,), (3, 700)]) if blocks else ROW_SHAPES)
        return (draw(st.integers(1, 40 if math.prod(row) < 64 else 4)),) + row
    if blocks:
        return draw(st.one_of(st.tuples(st.integers(BLOCK + 1, 4 * BLOCK)),
                              st.tuples(st.integers(2, 5), st.integers(BLOCK // 2 + 1, BLOCK))))
    return draw(st.one_of(
        st.tuples(st.integers(1, 3 * BLOCK + 100)),
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
        st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 9)),
        st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3), st.integers(1, 6))))


@st.composite
def row_subsets(draw, rows):
    """Sorted distinct rows of ``rows``: none, all, the first, the last, or any subset."""
    kind = draw(st.sampled_from(['none', 'all', 'first', 'last', 'any', 'any']))
    if kind == 'none':
        return np.zeros(0, np.int64)
    if kind == 'all':
        return np.arange(rows, dtype=np.int64)
    if kind in ('first', 'last'):
        return np.array([0 if kind == 'first' else rows - 1], np.int64)
    subset = draw(st.sets(st.integers(0, rows - 1), min_size=1, max_size=rows))
    return np.array(sorted(subset), np.int64)


def rule_adds_weights(case):
    """Does the gradient get the coupled L2 term ``wd * w``?"""
    return not case.options['decoupled_wd'] and case.options['wd'] != 0


def rule_gradient(case, p, g):
    """The gradient as the rule uses it, in the compute type, in the textbook's order:
    rescaled, plus the coupled L2 term, clipped. For building ties on purpose."""
    o, c = case.options, case.compute.type
    w = (p.master if p.master is not None else p.w).astype(c)
    if p.rows is not None and o['lazy_update']:
        w = w[p.rows]
    elif p.rows is not None:  # densified: absent rows count as zero gradient
        dense = np.zeros(p.shape, case.dtype)
        dense[p.rows] = g
        g = dense
    g = g.astype(c) * c(o['rescale_grad'])
    wd = 0.0 if o['decoupled_wd'] else o['wd']
    if wd:
        g = g + c(wd) * w
    if o['clip_gradient'] is not None:
        bound = c(o['clip_gradient'])
        g = np.clip(g, -bound, bound)
    return g


@st.composite
def params(draw, case, sparse, count, event_at=None):
    """``count`` parameters for ``case`` (its storage and options set); the one at
    ``event_at`` has a gradient to place an event in (rows, and more than one float16 block
    where the storage is float16)."""
    dtype, state = case.dtype, case.state_dtype.type
    plain16 = case.storage == 'float16'
    out = []
    for index in range(count):
        event = index == event_at
        shape = draw(shapes(sparse, blocks=event and case.dtype == np.float16))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        kind = draw(st.sampled_from(['dense', 'row_sparse', 'row_sparse', 'row_sparse_missing'])
                    if sparse else st.sampled_from(['dense', 'dense', 'row_sparse']))
        rows = draw(row_subsets(shape[0])) if sparse and draw(st.integers(0, 3)) else None
        if event and rows is not None and not rows.size:
            rows = np.array([shape[0] - 1], np.int64)
        if kind == 'row_sparse_missing' and shape[0] < 2:
            kind = 'row_sparse'
        w = sprinkle(draw, rng, magnitudes(rng, shape, 1e-3, 10.0).astype(dtype), dtype)
        if case.nonfinite_weights and w.size and draw(st.integers(0, 3)) == 0:
            # a weight that is already Inf or NaN: no L2 term may carry it into the moments
            w.flat[draw(st.integers(0, w.size - 1))] = draw(st.sampled_from([np.inf, -np.inf,
                                                                             np.nan]))
        stored = ()
        if kind == 'row_sparse_missing':
            stored = tuple(sorted(draw(st.sets(st.integers(0, shape[0] - 1), min_size=1,
                                               max_size=shape[0] - 1))))
            w[[r for r in range(shape[0]) if r not in stored]] = 0
        g_shape = shape if rows is None else (len(rows),) + shape[1:]
        g = sprinkle(draw, rng, magnitudes(rng, g_shape, 1e-4, 50.0 if plain16 else 100.0)
                     .astype(dtype), dtype)
        high = 1e3 if plain16 else 100.0
        m = sprinkle(draw, rng, magnitudes(rng, shape, 1e-4, 10.0).astype(state), state)
        v = sprinkle(draw, rng, np.abs(magnitudes(rng, shape, 1e-6, high)).astype(state), state)
        v = np.abs(v)
        vmax = np.abs(magnitudes(rng, shape, 1e-6, high)).astype(state)
        master = None
        if case.storage == 'float16_master':  # more bits than the weight, its rounding
            master = (w.astype(np.float32) * np.float32(1 + rng.uniform(-1e-4, 1e-4))).astype(
                np.float32)
            w = master.astype(np.float16)
        t = draw(st.one_of(st.integers(1, 3), st.integers(4, 10**6)))
        if case.options['yogi'] and rows is None and w.size and draw(st.booleans()):
            # the largest finite second moment, which a zero gradient leaves as it is in Yogi
            at = draw(st.integers(0, w.size - 1))
            w.flat[at], g.flat[at], v.flat[at] = 0, 0, np.finfo(state).max
            if master is not None:
                master.flat[at] = 0
        out.append(Param(shape, kind, rows, w, g, m, v, vmax, master, t, stored))
    return out


@st.composite
def position(draw, case, p, pieces):
    """A flat position in ``p.g``: in a float16 storage, in a chosen block of the float16
    loops (of a lazy row: blocks start at each row), mostly one before the last; else the
    first or last element, either side of the end of a piece (of ``pieces``), or anywhere."""
    size, lazy = p.g.size, p.rows is not None and case.options['lazy_update']
    if case.dtype == np.float16:
        length = p.row_length if lazy else size
        blocks = -(-length // BLOCK)
        block = draw(st.integers(0, blocks - 2) if blocks > 1 and draw(st.integers(0, 3))
                     else st.integers(0, blocks - 1))
        end = min(length, (block + 1) * BLOCK) - 1
        within = draw(st.sampled_from([block * BLOCK, end, draw(st.integers(block * BLOCK, end))]))
        row = draw(st.integers(0, size // length - 1))
        return row * length + within
    candidates = [0, size - 1] + [x for piece in pieces for k in range(1, 4)
                                  for x in (k * piece - 1, k * piece) if x < size]
    return draw(st.one_of(st.sampled_from(candidates), st.integers(0, size - 1)))


def place_ties(draw, case, p):
    """Yogi's tie ``g * g == v`` at a few drawn positions: ``v`` set to the square of the
    gradient the rule computes (float16 without master copy: gradients whose square float16
    holds exactly, options that keep them)."""
    dense_positions = (p.rows is None or case.options['lazy_update'])
    if not dense_positions or p.g.size == 0:
        return
    g, spots = p.g, draw(st.sets(st.integers(0, p.g.size - 1), min_size=1, max_size=4))
    for at in spots:
        # k * 2**e with k < 32: its square has at most 10 significant bits (float16's 11)
        g.flat[at] = draw(st.integers(1, 31)) * 2.0 ** draw(st.integers(-8, 2)) * draw(
            st.sampled_from([-1, 1]))
    square = (rule_gradient(case, p, g) ** 2).reshape(-1)
    target = (p.v if p.rows is None else p.v[p.rows]).reshape(-1)
    for at in spots:
        tied = case.state_dtype.type(square[at])
        if tied == square[at]:  # the state's dtype holds the square
            target[at] = tied
    if p.rows is None:
        p.v[...] = target.reshape(p.v.shape)
    else:
        p.v[p.rows] = target.reshape(p.g.shape)


def overflow_value(case):
    """A gradient element whose second moment overflows the state's dtype by far (the case's
    options: no clipping, ``beta2 <= 0.999``; a master copy's float32 moments also need
    rescale_grad, set to 1e17 there)."""
    o = case.options
    top = float(np.finfo(case.state_dtype).max)
    need = math.sqrt(16 / (1 - o['beta2'])) * math.sqrt(top) / o['rescale_grad']
    value = {'float16': 65504.0, 'float16_master': 65504.0, 'float32': 1e30,
             'float64': 1e200}[case.storage]
    assert value >= need, (value, need)
    return value


@st.composite
def cases(draw, storage, sparse, event=None, kernel_runs=True, operator=False):
    """An update call on ``storage`` parameters; ``event``: 'nonfinite', 'overflow' or None,
    drawn when not given ('ties' come with every Yogi case)."""
    event = draw(st.sampled_from([None, None, 'nonfinite', 'overflow'])) if event is None else event
    if operator:  # what MXNet's adam_update computes exactly, hyperparameters in float32's range
        options = draw(option_rows(modes=('outside', 'hat'), amsgrad=False, yogi=False,
                                   decoupled_wd=False).filter(_in_float32_range))
    else:
        options = draw(option_rows(clip=event != 'overflow'))
    plain16 = storage == 'float16'
    if plain16 and options['learning_rate'] >= 65520:  # Inf in float16
        # refused for a float16 weight (test_a_learning_rate_inf_in_float16_is_refused):
        # huge for float16 instead
        options['learning_rate'] = draw(HUGE_FOR_FLOAT16)
    if event == 'overflow':
        options['beta2'] = min(options['beta2'], 0.999)
        options['rescale_grad'] = 1e17 if storage == 'float16_master' else 1.0
    if plain16 and options['yogi']:  # ties exact in float16: the gradient as given
        options.update(rescale_grad=1.0, clip_gradient=None)
        if not options['decoupled_wd']:
            options['wd'] = 0.0
    if storage == 'float64' and options['yogi']:
        # A tie is a tie on both routes only if both compute the same gradient: MXNet parses
        # some 17-digit scalars (rescale_grad, wd) one unit off (configs.STEP_TOL), and a tie
        # missed by one unit moves v by twice (1 - beta2) * g * g.
        options['rescale_grad'] = 1.0
        if not options['decoupled_wd']:
            options['wd'] = 0.0
    options.update(multi_precision=STORAGES[storage][1],
                   lazy_update=draw(st.booleans()),
                   nonfinite=draw(st.sampled_from(['skip', 'raise'])))
    case = Case(storage, options, [], set(), set(),
                exact_ties=(options['rescale_grad'] == 1.0 and options['clip_gradient'] is None
                            and (options['decoupled_wd'] or options['wd'] == 0.0)),
                runs=[])
    # An Inf or NaN weight, where no L2 term carries it into the moments (MXNet's adam_update
    # adds wd * w even for wd = 0, which turns them NaN: not on the operator's cases).
    case.nonfinite_weights = not operator and not rule_adds_weights(case)
    count = draw(st.integers(1, 3))
    at = draw(st.integers(0, count - 1)) if event else None
    case.params = draw(params(case, sparse, count, event_at=at))
    if options['yogi']:
        for p in case.params:
            place_ties(draw, case, p)
    if kernel_runs:
        case.runs = [PRODUCTION] + [(variant, draw(st.integers(1, 3)), draw(pieces_for(case)), 0)
                                    for variant in VARIANTS]
    if event:
        p = case.params[at]
        spot = draw(position(case, p, [PIECE] + [piece for _, _, piece, _ in case.runs]))
        if event == 'nonfinite':
            p.g.flat[spot] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            case.bad.add(at)
        else:
            p.g.flat[spot] = overflow_value(case) * draw(st.sampled_from([-1.0, 1.0]))
            case.overflow.add(at)
    return case


def _in_float32_range(options):
    """adam_update refuses hyperparameters below float32's range ("Out of range value for
    lr"), those it is handed too: the learning rate times ``sqrt(1 - beta2**t) / (1 -
    beta1**t)``, epsilon times ``sqrt(1 - beta2**t)`` (down to 1e-2 times the value for
    ``beta2 <= 0.9999``). A known limitation of the operator route (test_properties): none
    below 1e-30 is drawn."""
    return all(value == 0 or abs(value) >= 1e-30 for value in options.values()
               if isinstance(value, float))


@st.composite
def pieces_for(draw, case):
    """A small piece size; for a lazy row of length L > 1 mostly one that L does not divide,
    so that pieces start inside its rows."""
    lengths = [p.row_length for p in case.params
               if p.rows is not None and case.options['lazy_update'] and p.row_length > 1]
    if lengths and draw(st.integers(0, 3)):
        length = draw(st.sampled_from(lengths))
        return length * draw(st.integers(0, 3)) + draw(st.integers(1, length - 1))
    return draw(st.one_of(st.integers(1, 64), st.sampled_from([BLOCK - 1, BLOCK, BLOCK + 1])))


# --- running a case ---------------------------------------------------------------------------

def test_the_kernels_piece_is_the_one_these_tests_and_the_docs_name():
    """The kernel cuts work into pieces of PIECE elements unless a test sets another: the
    size the slow tier's real arrays cross and docs/speed.md states."""
    assert kernel.LIBRARY.set_piece_size(0) == PIECE  # below 1: changes nothing, returns it


@contextlib.contextmanager
def kernel_settings(variant, threads, piece, parallel_min):
    """The kernel's variant, threads, piece size and thread threshold, for the block."""
    previous = (kernel.use_variant(variant), kernel.LIBRARY.set_piece_size(piece),
                kernel.THREADS, kernel.PARALLEL_MIN)
    kernel.THREADS, kernel.PARALLEL_MIN = threads, parallel_min
    try:
        yield
    finally:
        kernel.use_variant(previous[0])
        kernel.LIBRARY.set_piece_size(previous[1])
        kernel.THREADS, kernel.PARALLEL_MIN = previous[2:]


@dataclasses.dataclass
class Outcome:
    arrays: list  # per parameter: weight (dense view), [master,] m, v[, vmax]
    counts: list  # per parameter: the step count ``t`` its state ends with
    mxnet_counts: dict  # MXNet's (``_index_update_count``), which follow the states'
    num_update: int
    num_skipped: int
    warnings: list
    error: object  # (type, message) or None


def make_arrays(case, opt):
    """The weights, gradients and states of ``case`` as MXNet arrays for ``opt``."""
    dtype = case.dtype
    weights, grads, states = [], [], []
    for i, p in enumerate(case.params):
        every = np.arange(p.shape[0], dtype=np.int64)
        if p.weight == 'dense':
            weight = nd.array(p.w, dtype=dtype)
        else:
            kept = every if p.weight == 'row_sparse' else np.array(p.stored, np.int64)
            weight = nd.sparse.row_sparse_array((nd.array(p.w[kept], dtype=dtype),
                                                 nd.array(kept, dtype='int64')),
                                                shape=p.shape, dtype=dtype)
        if p.rows is None:
            grad = nd.array(p.g, dtype=dtype)
        else:
            grad = nd.sparse.row_sparse_array((nd.array(p.g, dtype=dtype),
                                               nd.array(p.rows, dtype='int64')),
                                              shape=p.shape, dtype=dtype)
        state = opt.create_state_multi_precision(i, weight)
        *moments, count = state[1] if p.master is not None else state
        for array, values in zip(moments, (p.m, p.v, p.vmax)[:len(moments)], strict=True):
            array[:] = nd.array(values, dtype=case.state_dtype)
        count[0] = p.t - 1
        if p.master is not None:
            master = nd.array(p.master, dtype='float32')
            state[0][:] = master if p.weight == 'dense' else master.tostype('row_sparse')
        weights.append(weight)
        grads.append(grad)
        states.append(state)
    return weights, grads, states


def flat_state(state):
    """The arrays of a parameter's state, ``(m, v[, vmax], [t])`` or ``(master, (m, v[,
    vmax], [t]))``, in order (not its step count)."""
    if isinstance(state, tuple):
        return [a for s in state for a in flat_state(s)]
    return [] if isinstance(state, list) else [state]


def state_count(state):
    """The step count ``t`` a parameter's state ends with."""
    inner = state[1] if isinstance(state[1], tuple) else state
    return inner[-1][0]


def snapshot(weights, states):
    return [[w.asnumpy()] + [s.asnumpy() for s in flat_state(state)]
            for w, state in zip(weights, states, strict=True)]


def initial(case):
    """The arrays of ``case`` before the call, as :func:`snapshot` lists them."""
    out = []
    for p in case.params:
        moments = [p.m, p.v] + ([p.vmax] if case.options['amsgrad'] else [])
        out.append([p.w] + ([p.master] if p.master is not None else []) + moments)
    return out


def run(case, fused_flag=True):
    """One update call of ``case``'s parameters through MyAdam (``fused_flag`` False: the
    textbook route). Returns the :class:`Outcome`."""
    opt = MyAdam(fused=fused_flag, **case.options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        weights, grads, states = make_arrays(case, opt)
        for i, p in enumerate(case.params):  # MXNet's counts, as they are in a run
            if p.t > 1:
                opt._index_update_count[i] = p.t - 1
        opt.num_update = max(opt._index_update_count.values(), default=0)
        error = None
        try:
            opt.update_multi_precision(list(range(len(case.params))), weights, grads, states)
        except (FloatingPointError, ValueError) as err:
            error = (type(err), str(err))
        nd.waitall()
    return Outcome(snapshot(weights, states), [state_count(s) for s in states],
                   dict(opt._index_update_count), opt.num_update, opt.num_skipped, [str(w.message) for w in caught
                                     if MXNET_ADVICE not in str(w.message)], error)


def run_kernel(case, settings_):
    with kernel_settings(*settings_):
        return run(case)


# --- comparing outcomes -------------------------------------------------------------------------

def bits(array):
    """The bits of a float array's values: every NaN made one NaN and -0 made 0 (a NaN's
    payload and a zero's sign are not the rule's: MXNet's row_sparse arrays store a row of
    zeros as no row, which reads back as +0)."""
    array = np.asarray(array)
    array = np.where(np.isnan(array), np.array(np.nan, array.dtype), array + array.dtype.type(0))
    return array.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[array.dtype.itemsize])


def assert_bitwise(got, want, what):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    diff = np.flatnonzero(bits(got) != bits(want))
    assert diff.size == 0, (f"{what}: {diff.size} elements differ, first at flat position "
                            f"{diff[0]}: {got.flat[diff[0]]!r} != {want.flat[diff[0]]!r}")


def subnormal_floor(case, p, array=0):
    """What a route's different rounding of one subnormal (in the compute type) can become in
    array ``array`` of :func:`snapshot`'s list: in the weight (and a master copy), the
    granularity of subnormals times the largest factor the step applies to the gradient,
    ``lr / (1 - beta1**t)`` over the smallest denominator ``sqrt(v_hat) + epsilon``:
    epsilon ('outside'), epsilon over ``sqrt(1 - beta2**t)`` ('hat'), the root of epsilon
    ('inside'); in the moments, a few times that granularity."""
    o = case.options
    if array > (1 if p.master is not None else 0):
        return 4 * float(np.finfo(case.compute).smallest_subnormal)
    bc1, bc2 = 1 - o['beta1'] ** p.t, 1 - o['beta2'] ** p.t
    least = {'outside': o['epsilon'], 'hat': o['epsilon'] / math.sqrt(bc2),
             'inside': math.sqrt(o['epsilon'])}[o['epsilon_mode']]
    tiny = float(np.finfo(case.compute).smallest_subnormal)
    return 4 * tiny * max(1.0, o['learning_rate'] * max(1.0, o['rescale_grad']) / bc1 / least)


def assert_close(got, want, before, tol, what, floor=0.0):
    """|got - want| <= tol * (|want| + the largest change of this array in the step) +
    ``floor``, both finite or both the same non-finite value."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    finite = np.isfinite(want)
    assert_bitwise(got[~finite], want[~finite], what + ' (non-finite elements)')
    g, w = got[finite].astype(np.float64), want[finite].astype(np.float64)
    change = np.abs(w - before.astype(np.float64)[finite]).max(initial=0.0)
    bound = tol * (np.abs(w) + change) + max(floor, np.finfo(want.dtype).smallest_subnormal)
    bad = np.flatnonzero(np.abs(g - w) > bound)
    assert bad.size == 0, (f"{what}: {bad.size} elements beyond the tolerance, first "
                           f"{g[bad[0]]!r} != {w[bad[0]]!r} (from {before[finite][bad[0]]!r}; "
                           f"the largest change {change!r})")


def assert_same_outcome(case, got, want, before, route):
    """``got`` (a route) against ``want`` (the textbook route): bit for bit where BITWISE,
    else to STEP_TOL (``tol`` overrides both)."""
    assert got.error == want.error, route
    assert got.warnings == want.warnings, route
    assert (got.counts, got.mxnet_counts, got.num_update, got.num_skipped) == (
        want.counts, want.mxnet_counts, want.num_update, want.num_skipped), route
    for i, (mine, reference, start) in enumerate(zip(got.arrays, want.arrays, before, strict=True)):
        for j, (a, b, s) in enumerate(zip(mine, reference, start, strict=True)):
            what = f'{route}: parameter {i}, array {j}'
            if case.storage in BITWISE:
                assert_bitwise(a, b, what)
            else:
                assert_close(a, b, s, STEP_TOL[case.storage], what,
                             subnormal_floor(case, case.params[i], j))


def written(case, p, array):
    """What the step of ``p`` writes of its ``array`` (a dense view): with a lazy
    gradient, the rows it holds; else all of it."""
    return array[p.rows] if p.rows is not None and case.options['lazy_update'] else array


def assert_as_built(case, outcome, before):
    """What ``case`` was built to show, on the textbook route (the ground truth): a
    gradient holding NaN or Inf refuses the call ('raise') or leaves its parameter, its
    moments and its step count untouched ('skip'); a second moment built to overflow is
    reported, and so is a weight holding Inf or NaN after the step; nothing else is
    reported. Every parameter stepped changes."""
    names = lambda indices: ', '.join(f'parameter index {i}' for i in sorted(indices))  # noqa: E731
    raising = case.options['nonfinite'] == 'raise'
    if case.bad and raising:
        assert outcome.error == (FloatingPointError, f"myadam: the gradient of "
                                 f"{names(case.bad)} holds NaN or Inf; nothing was updated")
        assert outcome.counts == [p.t - 1 for p in case.params]
        assert outcome.mxnet_counts == {i: p.t - 1 for i, p in enumerate(case.params)
                                        if p.t > 1}
        for now, start in zip(outcome.arrays, before, strict=True):
            for a, b in zip(now, start, strict=True):
                assert_bitwise(a, b.astype(a.dtype), 'refused call')
        return
    stepped = [i for i in range(len(case.params)) if i not in case.bad]
    counts = [p.t - (i in case.bad) for i, p in enumerate(case.params)]
    assert outcome.counts == counts
    assert outcome.mxnet_counts == {i: t for i, t in enumerate(counts) if t > 0}
    assert outcome.num_update == max(counts)
    for i in case.bad:
        for a, b in zip(outcome.arrays[i], before[i], strict=True):
            assert_bitwise(a, b.astype(a.dtype), f'skipped parameter {i}')
    for i in stepped:  # float16 steps may all round away; a gradient of no rows steps nothing
        if case.storage == 'float16' or np.abs(case.params[i].g).max(initial=0) < 1e-3:
            continue
        assert any(not np.array_equal(bits(a), bits(b.astype(a.dtype)))
                   for a, b in zip(outcome.arrays[i], before[i], strict=True)), f'parameter {i} did not move'
    # Reported: the second moments built to overflow, and the weights that hold Inf or NaN
    # where the step wrote them (a huge learning rate, a float16 weight past 65504, or one
    # that was not finite before; a lazy step writes the rows of its gradient only).
    overflowed = {'v': case.overflow - case.bad,
                  'w': {i for i in stepped
                        if not np.isfinite(written(case, case.params[i],
                                                   outcome.arrays[i][0])).all()}}
    said = {'v': "the second moment of {} overflowed to Inf although the gradient was finite "
                 "(its elements with v = Inf no longer move)",
            'w': "the weight of {} holds Inf or NaN after the update although the gradient was "
                 "finite (a float16 weight stepped past 65504, lr times the update beyond its "
                 "dtype's range, or a weight not finite before)"}
    warned = [f"myadam: skipped the update of parameter index {i}: its gradient holds NaN or Inf"
              for i in sorted(case.bad)]
    if raising and (overflowed['v'] or overflowed['w']):
        problems = [said[kind].format(names(overflowed[kind])) for kind in 'vw'
                    if overflowed[kind]]
        assert outcome.error == (FloatingPointError, f"myadam: {'; '.join(problems)}; this "
                                 "update call was applied")
    else:
        assert outcome.error is None
        warned += ["myadam: " + "; ".join(said[kind].format(f'parameter index {i}')
                                          for kind in 'vw' if i in overflowed[kind])
                   for i in sorted(overflowed['v'] | overflowed['w'])]
    assert len(outcome.warnings) == len(warned) and all(
        got.startswith(want) for got, want in zip(outcome.warnings, warned, strict=True)), outcome.warnings


def oracle_comparable(case):
    return (not case.bad and not case.overflow and (not case.options['yogi'] or case.exact_ties)
            and all(np.isfinite(p.g).all() for p in case.params))


def assert_matches_oracle(case, outcome, before):
    """The textbook route against the float64 NumPy oracle (``oracles.NumpyAdam``), one step
    from the case's moments and step count: weights (the master copy where there is one),
    m and v, to ORACLE_TOL of the dtype."""
    o = case.options
    tol = ORACLE_TOL[case.dtype.name]
    for i, p in enumerate(case.params):
        oracle = NumpyAdam(lr=o['learning_rate'], beta1=o['beta1'], beta2=o['beta2'],
                           epsilon=o['epsilon'], epsilon_mode=o['epsilon_mode'],
                           amsgrad=o['amsgrad'], yogi=o['yogi'], decoupled_wd=o['decoupled_wd'],
                           wd=o['wd'], rescale_grad=o['rescale_grad'],
                           clip_gradient=o['clip_gradient'])
        start = p.master if p.master is not None else p.w
        oracle.state[0] = dict(t=p.t - 1, m=p.m.astype(np.float64), v=p.v.astype(np.float64),
                               vmax=p.vmax.astype(np.float64))
        if p.rows is not None and o['lazy_update']:
            if not p.rows.size:
                continue
            want = oracle.step(0, start, p.g, rows=p.rows)
        elif p.rows is not None:
            dense = np.zeros(p.shape)
            dense[p.rows] = p.g
            want = oracle.step(0, start, dense)
        else:
            want = oracle.step(0, start, p.g)
        arrays = outcome.arrays[i]
        got = arrays[1] if p.master is not None else arrays[0]
        offset = 2 if p.master is not None else 1
        for name, have, want_, was in (('weight', got, want, start),
                                       ('m', arrays[offset], oracle.state[0]['m'], p.m),
                                       ('v', arrays[offset + 1], oracle.state[0]['v'], p.v)):
            top = float(np.finfo(have.dtype).max)
            beyond = np.abs(want_) > top  # overflows the dtype: Inf, or the largest value
            assert (np.sign(have[beyond]) == np.sign(want_[beyond])).all()
            assert (np.abs(have[beyond]) >= top).all(), f'parameter {i} {name}: not overflowed'
            want_ = np.where(beyond, 0.0, want_)
            have = np.where(beyond, 0.0, have)
            with np.errstate(invalid='ignore'):
                change = np.abs(want_ - was)
            biggest = change[np.isfinite(change)].max(initial=0.0)
            with np.errstate(over='ignore'):
                bound = tol * (np.abs(want_) + biggest) + np.abs(
                    np.spacing(want_.astype(have.dtype)))
            error = np.abs(have.astype(np.float64) - want_)
            with np.errstate(invalid='ignore'):
                bad = ~(error <= bound) & np.isfinite(want_)
            assert not bad.any(), (f'parameter {i} {name} against the oracle',
                                   have[bad][:3], want_[bad][:3])


def check_case(case):
    before = initial(case)
    textbook = run(case, fused_flag=False)
    assert_as_built(case, textbook, before)
    if oracle_comparable(case):
        assert_matches_oracle(case, textbook, before)
    first = None
    for settings_ in case.runs:
        kernel = run_kernel(case, settings_)
        if first is None:
            first = kernel
            assert_same_outcome(case, kernel, textbook, before, f'kernel {settings_}')
        else:  # every variant, piece size and thread count: the same bits
            assert (kernel.error, kernel.warnings, kernel.counts, kernel.mxnet_counts,
                    kernel.num_skipped) == (first.error, first.warnings, first.counts,
                                            first.mxnet_counts, first.num_skipped), settings_
            for i, (a_list, b_list) in enumerate(zip(kernel.arrays, first.arrays, strict=True)):
                for j, (a, b) in enumerate(zip(a_list, b_list, strict=True)):
                    assert_bitwise(a, b, f'kernel {settings_}: parameter {i}, array {j}')


# --- the tests ---------------------------------------------------------------------------------

@pytest.mark.filterwarnings('ignore::RuntimeWarning')
@pytest.mark.parametrize('sparse', [False, True], ids=['dense', 'row_sparse'])
@pytest.mark.parametrize('storage', list(STORAGES))
@examples(12)
@given(data=st.data())
def test_every_kernel_run_equals_the_textbook(storage, sparse, data):
    check_case(data.draw(cases(storage, sparse)))


# --- MXNet's operator: the route where the kernel is not (GPUs), on the same cases -----------

@contextlib.contextmanager
def without_the_kernel():
    library, kernel.LIBRARY = kernel.LIBRARY, None
    try:
        yield
    finally:
        kernel.LIBRARY = library


def float32_betas(case):
    """adam_update takes beta1 and beta2 as float32 and computes ``1 - beta`` there: drawn
    exact in float32 and >= 0.5, where ``1 - beta`` is exact too, both routes step with the
    same decay rates."""
    for name in ('beta1', 'beta2'):
        case.options[name] = float(np.float32(0.5 + case.options[name] / 2))
    return case


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
@pytest.mark.parametrize('sparse', [False, True], ids=['dense', 'row_sparse'])
@pytest.mark.parametrize('storage', ['float32', 'float64'])
@examples(10)
@given(data=st.data())
def test_mxnets_operator_equals_the_textbook(storage, sparse, data):
    """Without the kernel, dense float32 and float64 parameters (and densified row_sparse
    gradients) take MXNet's adam_update where it is exact: to OPERATOR_TOL of the textbook
    route, the same skips, warnings and errors; the others take the textbook route itself."""
    case = float32_betas(data.draw(cases(storage, sparse, kernel_runs=False, operator=True)))
    # adam_update multiplies the learning rate by m before it divides by sqrt(v) + epsilon:
    # where v is built to overflow in float32 (a gradient near 1e30) under a huge learning
    # rate, lr * m overflows too and its weight becomes NaN where the textbook's does not
    # move; both report the step (docs/mxnet-modes.md). Not drawn.
    assume(not (storage == 'float32' and case.overflow
                and case.options['learning_rate'] >= 1e20))
    before = initial(case)
    textbook = run(case, fused_flag=False)
    calls, operator_step = [], dispatch.operator_step
    dispatch.operator_step = lambda *args: calls.append(1) or operator_step(*args)
    try:
        with without_the_kernel():
            operator = run(case)
    finally:
        dispatch.operator_step = operator_step
    expected = [i for i, p in enumerate(case.params) if p.weight == 'dense' and i not in case.bad
                and (p.rows is None or not case.options['lazy_update'])]
    if case.options['nonfinite'] == 'skip' or not case.bad:
        assert len(calls) == len(expected)  # the route under test was taken
    assert (operator.error, operator.warnings, operator.counts, operator.mxnet_counts,
            operator.num_skipped) == (textbook.error, textbook.warnings, textbook.counts,
                                      textbook.mxnet_counts, textbook.num_skipped)
    for i, (mine, reference, start) in enumerate(zip(operator.arrays, textbook.arrays, before, strict=True)):
        for j, (a, b, s) in enumerate(zip(mine, reference, start, strict=True)):
            assert_close(a, b, s, OPERATOR_TOL, f'operator: parameter {i}, array {j}',
                         subnormal_floor(case, case.params[i], j))


# --- the KVStore's one-parameter calls, queued in MXNet's engine --------------------------------

TWO = [mx.cpu(0), mx.cpu(1)]
QUEUED_STEPS = 3  # the first runs on the calling thread (it plans), the others are queued


@st.composite
def queued_runs(draw, storage):
    """Dense parameters and QUEUED_STEPS gradients for a Trainer on two devices whose KVStore
    updates (nonfinite='skip': queued); an event (NaN or Inf, or an overflowing second moment)
    at a chosen step, parameter and position, and the kernel's settings."""
    case = draw(cases(storage, sparse=False, event=draw(st.sampled_from([None, 'nonfinite',
                                                                         'overflow']))))
    case.options['nonfinite'] = 'skip'
    steps = []
    for step in range(QUEUED_STEPS):
        grads = [p.g.copy() for p in case.params]
        rng = np.random.default_rng(step)
        if step:  # new gradients, the event's kept at its step only
            grads = [magnitudes(rng, p.shape, 1e-4, 50.0).astype(case.dtype) for p in case.params]
        steps.append(grads)
    event_step = draw(st.integers(0, QUEUED_STEPS - 1))
    steps[0], steps[event_step] = steps[event_step], steps[0]
    return case, steps, event_step, draw(st.sampled_from(case.runs))


def queued_trainer(case):
    params = []
    for i, p in enumerate(case.params):
        param = gluon.Parameter(f'p{i}', shape=p.shape, dtype=case.dtype)
        param.initialize(ctx=TWO)
        param.set_data(nd.array(p.w, dtype=case.dtype))
        params.append(param)
    trainer = gluon.Trainer(params, 'myadam', dict(case.options), kvstore='device',
                            update_on_kvstore=True)
    return params, trainer


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
@pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')
@pytest.mark.parametrize('storage', list(STORAGES))
@examples(8)
@given(data=st.data())
def test_the_queued_kvstore_step_equals_the_textbook(storage, data):
    """A Trainer on two devices whose KVStore updates: each parameter's update is queued in
    MXNet's engine (after the first, on the calling thread). The weights after every step,
    the states, step counts and skips equal those of the textbook route run on the same
    (summed) gradients one parameter at a time, bit for bit where BITWISE."""
    case, steps, event_step, settings_ = data.draw(queued_runs(storage))
    params, trainer = queued_trainer(case)
    reference = MyAdam(fused=False, **case.options)
    weights = [nd.array(p.w, dtype=case.dtype) for p in case.params]
    states = [reference.create_state_multi_precision(i, w) for i, w in enumerate(weights)]
    with kernel_settings(*settings_):
        for step, grads in enumerate(steps):
            for param, g in zip(params, grads, strict=True):
                param.list_grad()[0][:] = nd.array(g, dtype=case.dtype)
                param.list_grad()[1][:] = 0
                for d in param.list_data():
                    d._fresh_grad = True
            trainer.step(1)
            if step == QUEUED_STEPS - 1:
                trainer.optimizer._take_queued()
            for i, g in enumerate(grads):  # the KVStore's sum: g + 0
                total = (g + np.zeros_like(g)).astype(case.dtype)
                reference.update_multi_precision(i, weights[i], nd.array(total, dtype=case.dtype),
                                                 states[i])
            for i, (param, weight) in enumerate(zip(params, weights, strict=True)):
                got, want = param.data(TWO[0]).asnumpy(), weight.asnumpy()
                if case.storage in BITWISE:
                    assert_bitwise(got, want, f'step {step}: parameter {i}')
                else:
                    assert_close(got, want, case.params[i].w, STEP_TOL[case.storage] * (step + 1),
                                 f'step {step}: parameter {i}', subnormal_floor(case, case.params[i]))
    opt = trainer.optimizer
    assert list(opt._engine.plans) == [i for i in range(len(params))], 'the queued path was not taken'
    assert (opt._index_update_count, opt.num_update, opt.num_skipped) == (
        reference._index_update_count, reference.num_update, reference.num_skipped)
    updater = trainer._kvstore._updater
    for i in range(len(params)):
        assert state_count(updater.states[i]) == state_count(states[i]), f'parameter {i}'
        for a, b in zip(flat_state(updater.states[i]), flat_state(states[i]), strict=True):
            if case.storage in BITWISE:
                assert_bitwise(a.asnumpy(), b.asnumpy(), f'state of parameter {i}')


# --- values each call checks in the dtypes it steps: the registry's error inputs ---------------

DTYPE_SETS = [('float32',), ('float64',), ('float16',), ('float32', 'float64'),
              ('float16', 'float64'), ('float16', 'float32', 'float64')]


def one_call(opt, dtypes, indices):
    """A call stepping one fresh parameter of each dtype; returns (error, weights before,
    weights after)."""
    weights = [nd.array([0.5, -1.0, 0.0], dtype=d) for d in dtypes]
    grads = [nd.array([1.0, 0.0, -2.0], dtype=d) for d in dtypes]
    states = [opt.create_state_multi_precision(i, w) for i, w in zip(indices, weights, strict=True)]
    before = [w.asnumpy() for w in weights]
    try:
        opt.update_multi_precision(indices, weights, grads, states)
    except ValueError as err:
        return err, before, [w.asnumpy() for w in weights]
    return None, before, [w.asnumpy() for w in weights]


@pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')
@examples(15)
@given(fused_flag=st.booleans(), value=st.sampled_from(RESCALE_GRADS),
       calls=st.lists(st.sampled_from(DTYPE_SETS), min_size=2, max_size=5))
@example(fused_flag=True, value=1e39, calls=[('float64',), ('float32',)])
@example(fused_flag=False, value=1e-46, calls=[('float64',), ('float16', 'float64')])
def test_rescale_grad_is_checked_in_every_dtype_of_every_call(fused_flag, value, calls):
    """One optimizer, ``rescale_grad`` (as Trainer.step sets it) and calls of parameters of
    several dtypes: a call whose dtypes cannot hold the value (Inf or 0 in float32, which
    float16 parameters are computed in) is refused, naming it, and changes nothing, however
    often the value passed for other dtypes before; the others step, finite."""
    opt = MyAdam(learning_rate=0.1, fused=fused_flag)
    opt.rescale_grad = value
    for n, dtypes in enumerate(calls):
        indices = [10 * n + i for i in range(len(dtypes))]
        error, before, after = one_call(opt, dtypes, indices)
        if all(finite_in(value, d) for d in dtypes):
            assert error is None, (dtypes, value)
            assert all(np.isfinite(w).all() for w in after)
            assert all(opt._index_update_count[i] == 1 for i in indices)
        else:
            assert error is not None and str(error).startswith(
                f"myadam: Invalid rescale_grad: {value!r} at update "), (dtypes, value)
            for w, b in zip(after, before, strict=True):
                np.testing.assert_array_equal(w, b)
            assert not any(i in opt._index_update_count for i in indices)


@pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')
@pytest.mark.parametrize('fused_flag', [True, False], ids=['kernel', 'textbook'])
@pytest.mark.parametrize('dtype', ['float32', 'float16'])
@pytest.mark.parametrize('lr', LEARNING_RATES_INF_IN_FLOAT32)
def test_a_learning_rate_inf_in_the_dtype_is_refused(lr, dtype, fused_flag):
    """A learning rate finite as a Python float and Inf in the float32 that float32 and
    float16 parameters are computed in (the step would multiply by Inf: NaN where u = 0) is
    refused, naming it, and changes nothing."""
    opt = MyAdam(learning_rate=lr, fused=fused_flag)
    error, before, after = one_call(opt, (dtype,), [0])
    np.testing.assert_array_equal(after[0], before[0])
    assert error is not None and str(error).startswith(
        f"myadam: Invalid learning rate: {lr!r} at update "), error


@pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')
@pytest.mark.parametrize('fused_flag', [True, False], ids=['kernel', 'textbook'])
@pytest.mark.parametrize('lr', LEARNING_RATES_INF_IN_FLOAT16)
def test_a_learning_rate_inf_in_float16_is_refused_without_a_master_copy(lr, fused_flag):
    """A float16 weight without a master copy is written in float16, where the learning
    rate is Inf: refused, naming it, nothing changed; with a float32 master copy it steps
    (to a weight past float16's range, which is reported)."""
    error, before, after = one_call(MyAdam(learning_rate=lr, fused=fused_flag), ('float16',),
                                    [0])
    np.testing.assert_array_equal(after[0], before[0])
    assert error is not None and str(error).startswith(
        f"myadam: Invalid learning rate: {lr!r} at update "), error
    opt = MyAdam(learning_rate=lr, fused=fused_flag, multi_precision=True)
    with pytest.warns(RuntimeWarning, match='the weight of parameter index 0 holds Inf or NaN'):
        error, before, after = one_call(opt, ('float16',), [0])
    assert error is None and not np.array_equal(after[0], before[0])


def test_a_learning_rate_finite_in_float64_steps_float64_parameters():
    """The other side of the case above: 1e39 is a learning rate float64 holds."""
    opt = MyAdam(learning_rate=1e39)
    error, before, after = one_call(opt, ('float64',), [0])
    assert error is None
    np.testing.assert_allclose(after[0], before[0] - 1e39 * np.sign([1.0, 0.0, -2.0]), rtol=1e-6)


# --- the real sizes: 2^18-element pieces, the 2^20-element thread threshold ---------------------

def real_size_case(storage, event, options):
    """Two parameters past the real thresholds, on the production settings with three and two
    threads: a dense one of PARALLEL_MIN + 1001 elements (four pieces and more, several
    threads), and a lazy row_sparse one of 40000 stored rows of 7 (280000 elements: 2^18 is
    not a multiple of 7, so the second piece starts inside a row), the event (NaN, or an
    overflow in float16 block 200 of 1025) in the dense one."""
    dtype, master = STORAGES[storage]
    state = np.float32 if master else dtype
    rng = np.random.default_rng(7)
    options = dict(options, multi_precision=master, lazy_update=True, nonfinite='skip')
    case = Case(storage, options, [], set(), set(), exact_ties=False,
                runs=[(VARIANTS[0], 3, PIECE, kernel.PARALLEL_MIN),
                      (VARIANTS[-1], 2, PIECE, kernel.PARALLEL_MIN)])
    for shape, rows in (((kernel.PARALLEL_MIN + 1001,), None),
                        ((50_000, 7), np.sort(rng.choice(50_000, 40_000, replace=False)))):
        w = magnitudes(rng, shape, 1e-3, 10.0).astype(dtype)
        g_shape = shape if rows is None else (len(rows),) + shape[1:]
        mw = (w.astype(np.float32) * np.float32(1.00001)) if master else None
        case.params.append(Param(
            shape, 'dense', rows, mw.astype(np.float16) if master else w,
            magnitudes(rng, g_shape, 1e-4, 50.0).astype(dtype),
            magnitudes(rng, shape, 1e-4, 10.0).astype(state),
            np.abs(magnitudes(rng, shape, 1e-6, 100.0)).astype(state),
            np.abs(magnitudes(rng, shape, 1e-6, 100.0)).astype(state), mw, 5))
    dense = case.params[0]
    if event == 'nonfinite':
        dense.g[PIECE - 1] = np.nan  # the last element of the first piece
        case.bad.add(0)
    elif event == 'overflow':
        case.options['rescale_grad'] = 1e17 if master else 1.0
        dense.g[200 * BLOCK + 17] = overflow_value(case)
        case.overflow.add(0)
    return case


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore::RuntimeWarning')
@pytest.mark.parametrize('event', [None, 'nonfinite', 'overflow'])
@pytest.mark.parametrize('storage', list(STORAGES))
def test_real_sizes_equal_the_textbook(storage, event):
    options = dict(learning_rate=0.01, beta1=0.85, beta2=0.995, epsilon=1e-4,
                   epsilon_mode='hat', amsgrad=True, yogi=True, decoupled_wd=False, wd=0.1,
                   rescale_grad=0.5, clip_gradient=None)
    check_case(real_size_case(storage, event, options))


@pytest.mark.parametrize('weights_at, grads_at', [
    (mx.cpu(0), mx.cpu(0)), (mx.cpu(0), mx.cpu_pinned(0)), (mx.cpu_pinned(0), mx.cpu_pinned(0)),
    (mx.cpu(1), mx.Context('cpu_shared', 0)),
    (mx.Context('cpu_shared', 0), mx.Context('cpu_shared', 0))], ids=str)
def test_the_queued_step_takes_arrays_in_any_host_memory(weights_at, grads_at):
    """The KVStore's merged gradients are cpu_pinned, a DataLoader's arrays cpu_shared: the
    queued step takes weights and gradients in every kind of host memory (and steps them)."""
    weight, grad = nd.ones((8,), ctx=weights_at), nd.full((8,), 0.5, ctx=grads_at)
    state = MyAdam(learning_rate=0.1).create_state(0, weight)
    table = kernel.HandleTable('float32', [(weight.shape, weight, grad, state[:2], None, None)])
    step = textbook.Step(t=1, lr=0.1, wd=0.0, beta1=0.9, beta2=0.999, epsilon=1e-8,
                         epsilon_mode='outside', amsgrad=False, yogi=False, decoupled_wd=False,
                         rescale_grad=1.0, clip_gradient=None, lazy_update=True)
    nd.waitall()  # allocated: a queued step reads its arrays' data pointers when queued
    queued = table.queue(step, weight, grad)
    assert queued is not None and queued.result() == (True, 0)  # finite, no overflow
    np.testing.assert_allclose(weight.asnumpy(), 0.9, rtol=1e-6)
