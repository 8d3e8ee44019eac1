"""docs/mxnet-modes.md's routes table against the dispatch: every layout and option set a
parameter can have, the route the table gives it and the route it takes.

The route taken is :func:`adam_plugin.dispatch.route`'s, and, for a row_sparse weight in
host memory, that of a real :class:`adam_plugin.dispatch.Batch` (which sends a weight that
does not store every row to the textbook route).
"""
import itertools
import pathlib
import re

import mxnet as mx
import numpy as np
import pytest

from adam_plugin import MyAdam, dispatch, kernel

PAGE = pathlib.Path(__file__).resolve().parent.parent / 'docs' / 'mxnet-modes.md'
ROWS = 6  # of the weight

DTYPES = ('float16', 'float32', 'float64')
STORAGES = ('dense', 'row_sparse, every row stored', 'row_sparse, rows missing')
GRADIENTS = ('dense', 'row_sparse, lazy', 'row_sparse, not lazy')
# (device type of the weight, the gradient's, is the kernel built): host, then other
HOST = (('cpu', 'cpu', True), ('cpu_pinned', 'cpu_pinned', True), ('cpu_shared', 'cpu', True))
OTHER = (('gpu', 'gpu', True), ('cpu', 'gpu', True), ('cpu', 'cpu', False), ('gpu', 'gpu', False))
OPTIONS = [dict(fused=fused, epsilon_mode=mode, amsgrad=amsgrad, yogi=yogi,
                decoupled_wd=decoupled)
           for fused, mode, amsgrad, yogi, decoupled in itertools.product(
               (True, False), ('outside', 'inside', 'hat'), *[(False, True)] * 3)]
# The page's definition of "the operator's options", which the test reads as operators() does.
OPERATORS_DEFINED = ("*The operator's options* are `epsilon_mode` `'outside'` or `'hat'` "
                     "with none of `amsgrad`, `yogi` and `decoupled_wd`")


def operators(options):
    return (options['epsilon_mode'] in ('outside', 'hat')
            and not (options['amsgrad'] or options['yogi'] or options['decoupled_wd']))


# Each column's words -> the values of a case they cover.
CELLS = [
    ('weight dtype', lambda d: d, {name: {name} for name in DTYPES}),
    ('weight storage', lambda s: s, {'dense': {STORAGES[0]}, 'row_sparse': set(STORAGES[1:]),
                                     **{s: {s} for s in STORAGES[1:]}}),
    ('gradient', lambda g: g, {'dense': {GRADIENTS[0]}, 'row_sparse': set(GRADIENTS[1:]),
                               **{g: {g} for g in GRADIENTS[1:]}}),
    ('device', lambda d: 'host' if d in HOST else 'other', {'host': {'host'}, 'other': {'other'}}),
    ('options', lambda o: ('fused=False' if not o['fused'] else
                           "the operator's" if operators(o) else 'any other'),
     {'`fused=False`': {'fused=False'}, "the operator's": {"the operator's"},
      'any other': {'any other'}}),
]
ANY = {'weight dtype': None, 'weight storage': None, 'gradient': None, 'device': None,
       'options': {"the operator's", 'any other'}}  # 'any' options: fused=True's


def table(text):
    """The routes table: ``[(line, {column: set of values or None for any}, route)]``."""
    lines = text.split('\n')
    start = lines.index('| weight dtype | weight storage | gradient | device | options | route |')
    rows = []
    for number, line in enumerate(lines[start + 2:], start + 3):
        if not line.startswith('|'):
            break
        cells = [c.strip() for c in line.strip('|').split('|')]
        assert len(cells) == 6, f'mxnet-modes.md:{number}: {len(cells)} cells, not 6'
        covered = {}
        for (column, _, words), cell in zip(CELLS, cells[:len(CELLS)], strict=True):
            if cell == 'any':
                covered[column] = ANY[column]
                continue
            covered[column] = set()
            for item in cell.split('; '):
                assert item in words, (f'mxnet-modes.md:{number}: {column} {item!r} is not one '
                                       f'of {sorted(words)} or any')
                covered[column] |= words[item]
        route = re.match(r"`'(\w+)'`", cells[5])
        assert route, f'mxnet-modes.md:{number}: the route cell does not start with a route'
        rows.append((number, covered, route.group(1)))
    return rows


OPTIMIZERS = {}  # (options, lazy_update) -> MyAdam


def taken(dtype, storage, gradient, device, options):
    """The route a parameter of that layout takes with those options."""
    weight_device, grad_device, built = device
    layout = dispatch.Layout(dense=storage == 'dense', dtype=np.dtype(dtype),
                             device_type=weight_device,
                             row_sparse_grad=gradient != 'dense', shape=(ROWS, 2),
                             grad_in_host_memory=grad_device in dispatch.HOST_DEVICE_TYPES)
    lazy = gradient != 'row_sparse, not lazy'
    optimizer = OPTIMIZERS.setdefault((tuple(options.items()), lazy),
                                      MyAdam(lazy_update=lazy, **options))
    if not built:
        saved, kernel.LIBRARY = kernel.LIBRARY, None
        try:
            return dispatch.route(layout, optimizer)  # no Batch: it would build for the kernel
        finally:
            kernel.LIBRARY = saved
    route = dispatch.route(layout, optimizer)
    if storage == 'dense' or route != 'kernel':
        return route
    # A row_sparse weight for the kernel: a real Batch, which reads which rows it stores.
    rows = list(range(ROWS)) if storage == STORAGES[1] else [1, 4]
    ctx, grad_ctx = mx.Context(weight_device, 0), mx.Context(grad_device, 0)
    weight = mx.nd.sparse.row_sparse_array((np.ones((len(rows), 2)), rows), shape=(ROWS, 2),
                                           dtype=dtype, ctx=ctx)
    grad = (mx.nd.ones((ROWS, 2), dtype=dtype, ctx=grad_ctx) if gradient == 'dense' else
            mx.nd.sparse.row_sparse_array((np.ones((1, 2)), [4]), shape=(ROWS, 2), dtype=dtype,
                                          ctx=grad_ctx))
    state = optimizer.create_state_multi_precision(0, weight)
    return dispatch.Batch(optimizer, [layout], [weight], [grad], [state], False).routes[0]


def test_the_page_defines_the_operators_options_as_read_here():
    assert OPERATORS_DEFINED in ' '.join(PAGE.read_text().split())


def test_the_reader_refuses_words_it_does_not_know():
    bad = ('| weight dtype | weight storage | gradient | device | options | route |\n|---|\n'
           "| float32 | dense | dense | gpu | any | `'kernel'` |\n")
    with pytest.raises(AssertionError, match="device 'gpu' is not one of"):
        table(bad)


QUICK_OPTIONS = (dict(OPTIONS[0]), dict(OPTIONS[0], fused=False),
                 dict(OPTIONS[0], epsilon_mode='inside'), dict(OPTIONS[0], yogi=True))


def options_param(options):
    name = ','.join(f'{k}={v}' for k, v in options.items() if v != OPTIONS[0][k]) or 'defaults'
    return pytest.param(options, id=name, marks=() if options in QUICK_OPTIONS else pytest.mark.slow)


@pytest.mark.filterwarnings('ignore:Accumulating with float16')
@pytest.mark.parametrize('options', [options_param(o) for o in OPTIONS])
def test_every_layout_takes_the_route_the_table_gives(options):
    rows = table(PAGE.read_text())
    wrong = []
    for case in itertools.product(DTYPES, STORAGES, GRADIENTS, HOST + OTHER, [options]):
        values = {column: read(part) for (column, read, _), part in zip(CELLS, case, strict=True)}
        matching = [(line, route) for line, covered, route in rows
                    if all(covered[c] is None or values[c] in covered[c] for c in covered)]
        described = f'{case[0]}, {case[1]} weight, {case[2]} gradient, {case[3]}, {case[4]}'
        if len(matching) != 1:
            wrong.append(f'{described}: {len(matching)} rows of the table (lines '
                         f'{[line for line, _ in matching]}), not one')
            continue
        route = taken(*case)
        if route != matching[0][1]:
            wrong.append(f'{described}: the table (line {matching[0][0]}) says '
                         f'{matching[0][1]!r}, the dispatch takes {route!r}')
    assert not wrong, f'{len(wrong)} cases, e.g.:\n' + '\n'.join(wrong[:15])
