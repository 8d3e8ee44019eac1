"""Which implementation updates each parameter: the one place that decides.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

Three routes, all computing :func:`adam_plugin.textbook.adam_step`:

``'kernel'``
    :mod:`adam_plugin.kernel`, the single-pass compiled kernel, for float16, float32
    and float64 parameters in host memory (cpu, cpu_pinned, cpu_shared); float16
    with or without a float32 master copy. Every option is handled there. The weight
    is dense, or ``row_sparse`` storing every row (as ``SparseEmbedding``'s under a
    Trainer), stepped in its own storage. A ``row_sparse`` gradient with
    ``lazy_update`` steps only its rows (the kernel reads its stored values); without,
    it is densified first. A call of one dense parameter from the KVStore's callback
    is queued in MXNet's engine (:meth:`Batch.queue`; :mod:`adam_plugin.engine` says when),
    the others run on the calling thread.
``'operator'``
    MXNet's own fused ``adam_update`` operator, for dense float32 and float64
    parameters on other devices (GPU), or on CPU when the kernel was not built (a
    row_sparse gradient as on the kernel route), and only when the options are ones
    it computes exactly: no AMSGrad, no Yogi, coupled weight decay, ``epsilon_mode``
    'outside' or 'hat' (see :func:`operator_step`).
``'textbook'``
    The NDArray-op ground truth, for everything else: ``fused=False``, float16 off
    the kernel, row_sparse weights that do not store every row, lazy updates off the
    kernel, and options the operator lacks.
"""
import math
import operator
from typing import NamedTuple

import mxnet.ndarray as nd
import numpy

from . import kernel, mxnet_internals, textbook
from .options import InvalidOption, step_count

KERNEL, OPERATOR, TEXTBOOK = 'kernel', 'operator', 'textbook'
KERNEL_DTYPES = (numpy.dtype(numpy.float16), numpy.dtype(numpy.float32),
                 numpy.dtype(numpy.float64))
OPERATOR_DTYPES = KERNEL_DTYPES[1:]
FLOAT16, FLOAT32 = KERNEL_DTYPES[:2]
# Host memory, which the kernel reads: ``cpu_pinned`` holds the KVStore's merged
# copies (kvstore 'local', and 'device' over CPU contexts), ``cpu_shared`` the
# DataLoader's worker output.
HOST_DEVICE_TYPES = ('cpu', 'cpu_pinned', 'cpu_shared')


class Layout(NamedTuple):
    """What the dispatch reads of a weight and its gradient; fixed for the arrays' life.

    Attributes
    ----------
    dense : bool
        The weight is ``stype='default'`` (not row_sparse).
    dtype : numpy.dtype
        The weight's dtype, which is the gradient's.
    device_type : str
        ``'cpu'``, ``'gpu'``, ... of the weight's context.
    row_sparse_grad : bool
        The gradient is ``stype='row_sparse'``.
    shape : tuple of int
        The weight's.
    grad_in_host_memory : bool
        The gradient's context is one of :data:`HOST_DEVICE_TYPES` (the KVStore's merge
        buffer may be on another context than the weight).
    """
    dense: bool
    dtype: numpy.dtype
    device_type: str
    row_sparse_grad: bool = False
    shape: tuple = ()
    grad_in_host_memory: bool = True


class CheckedLayouts:
    """The :class:`Layout` of each parameter index, once its gradient and state are found
    to fit its weight; read from MXNet, and checked, only when its arrays change.

    Under a ``Trainer`` the same weight, gradient and state objects come back every
    step (one set per device), and each property read is a call into MXNet: the
    layouts last seen, :data:`LAYOUTS_PER_INDEX` per index (newest first, one per
    device), are reused while all three are the same objects. The KVStore's callback
    hands new weight and gradient objects at every call: the kernel reads what the
    layout is made of in one call (:func:`adam_plugin.kernel.describe`), and the layout
    of the same state with arrays that read the same is reused (without the kernel,
    the layout is read afresh, and a state found to fit the same layout on the same
    context is not checked again).

    Parameters
    ----------
    name : callable
        ``name(index)``, the parameter as error messages call it.
    """

    def __init__(self, name):
        self._name = name
        # index -> [(weight, grad, state, multi_precision, context, Layout, kernel.describe
        # of weight and grad)]
        self._seen = {}
        self._holders = {}  # id of an array or [t] of a state in _seen -> (it, that state, index)

    def __call__(self, index, weight, grad, state=None, multi_precision=False):
        """The :class:`Layout` of ``weight`` and ``grad``, once ``state`` (when given) is
        found to fit them.

        Raises
        ------
        ValueError
            If the gradient's shape or dtype is not the weight's: MXNet's NDArray
            arithmetic would broadcast a smaller gradient, and the kernel reads raw
            memory, either giving wrong numbers without a word. If ``state`` is not
            what ``MyAdam.create_state_multi_precision`` makes for this weight:
            ``(m, v[, vmax], [t])``, or ``(master, (m, v[, vmax], [t]))`` for a float16
            weight under ``multi_precision``, dense arrays on the weight's context of
            its shape, the moments of its dtype (float32 beside the float32 master copy,
            which is row_sparse beside a row_sparse weight), and the step count ``t``
            passing :func:`adam_plugin.options.step_count` (or no ``[t]``: a state saved
            without it). The kernel reads and writes the arrays as raw memory of the
            weight's size: a smaller state would be written past its end. If ``state``
            holds an array or its ``[t]`` twice, or one that another state in use holds
            (states loaded by MXNet's ``Trainer.load_states``, whose pickle may name an
            object twice): each holder would step it.
        """
        seen = self._seen.setdefault(index, [])
        for entry in seen:
            if (entry[0] is weight and entry[1] is grad and entry[2] is state
                    and entry[3] == multi_precision):
                return entry[5]
        described = kernel.describe(weight, grad)  # one call into MXNet (None: no kernel)
        for at, entry in enumerate(seen):
            if (described is not None and entry[6] == described and entry[2] is state
                    and entry[3] == multi_precision):  # the same arrays, new objects
                seen.insert(0, (weight, grad, *seen.pop(at)[2:]))
                return entry[5]
        shape, dtype = weight.shape, weight.dtype  # each read is a call into MXNet
        if grad.shape != shape or grad.dtype != dtype:
            raise ValueError(
                f"myadam: the gradient of {self._name(index)} has shape {grad.shape} and "
                f"dtype {numpy.dtype(grad.dtype).name}, its weight {shape} and "
                f"{numpy.dtype(dtype).name}; nothing was updated")
        context = weight.context
        layout = Layout(dense=weight.stype == 'default', dtype=numpy.dtype(dtype),
                        device_type=context.device_type,
                        row_sparse_grad=grad.stype == 'row_sparse', shape=shape,
                        grad_in_host_memory=grad.context.device_type in HOST_DEVICE_TYPES)
        master = multi_precision and layout.dtype == FLOAT16
        fits = any(entry[2] is state and entry[3] == multi_precision and entry[4] == context
                   and entry[5] == layout for entry in seen)  # new weight objects (KVStore)
        problem = not fits and state is not None and (
            _misfit(state, layout, master, context)
            or (not any(entry[2] is state for entry in seen) and self._shared(index, state)))
        if problem:
            dtype = 'float32 master copy and moments' if master else f'{layout.dtype.name} moments'
            raise ValueError(f"myadam: the state of {self._name(index)} does not fit its weight "
                             f"(shape {layout.shape}, {dtype}, on {weight.context}): {problem}; "
                             "nothing was updated")
        seen.insert(0, (weight, grad, state, multi_precision, context, layout, described))
        for item in state_objects(state):
            self._holders[id(item)] = item, state, index
        for dropped in seen[LAYOUTS_PER_INDEX:]:
            gone = dropped[2]
            if not any(entry[2] is gone for entry in seen[:LAYOUTS_PER_INDEX]):
                for item in state_objects(gone):
                    if self._holders.get(id(item), (None, None))[1] is gone:
                        del self._holders[id(item)]
        del seen[LAYOUTS_PER_INDEX:]
        return layout

    def _shared(self, index, state):
        """What ``state``, new for ``index``, holds twice or shares with another state in
        use (an array, or the one-item list ``[t]``), or None."""
        mine = set()
        for item in state_objects(state):
            what = 'step count' if type(item) is list else 'array'
            if id(item) in mine:
                return f"it holds one {what} twice"
            mine.add(id(item))
            holder = self._holders.get(id(item))
            if holder is not None and holder[0] is item and holder[1] is not state:
                return (f"one {what} of it is also in the state of "
                        f"{self._name(holder[2])}"
                        + (' on another device' if holder[2] == index else ''))
        return None


LAYOUTS_PER_INDEX = 8  # the layouts CheckedLayouts keeps of a parameter index


def _misfit(state, layout, master, context):
    """What in ``state`` does not fit a weight of ``layout`` on ``context`` (see
    :class:`CheckedLayouts`), or None."""
    if master:
        if not (isinstance(state, (tuple, list)) and len(state) == 2
                and isinstance(state[1], (tuple, list)) and state[1]):
            return f"it is {_structure(state)}, not (master copy, (m, v[, vmax], [t]))"
        dtype = numpy.dtype(numpy.float32)
    else:
        if not (isinstance(state, (tuple, list)) and state):
            return f"it is {_structure(state)}, not (m, v[, vmax], [t])"
        dtype = layout.dtype
    moments, copy, count = _split(state, master)
    if count is not None:
        try:
            step_count('step count', count)
        except InvalidOption as err:
            return str(err)
    if len(moments) not in (2, 3):
        return f"it holds {len(moments)} moments, not (m, v[, vmax], [t])"
    arrays = ([('master copy', copy)] if master else []) + list(zip(('m', 'v', 'vmax')[:len(moments)], moments, strict=True))
    for what, array in arrays:
        if not isinstance(array, nd.NDArray):
            return f"its {what} is a {type(array).__name__}, not an NDArray"
        stypes = ('default', 'row_sparse') if what == 'master copy' and not layout.dense else (
            'default',)  # a row_sparse weight's astype: Batch sees it stores every row
        if array.stype not in stypes:
            return f"its {what} is {array.stype}"
        if tuple(array.shape) != tuple(layout.shape):
            return f"its {what} has shape {array.shape}"
        if numpy.dtype(array.dtype) != dtype:
            return f"its {what} is {numpy.dtype(array.dtype).name}"
        if array.context != context:
            return f"its {what} is on {array.context}"
    return None


def state_objects(state):
    """The arrays and step counts ``[t]`` (one-item lists) of ``state``, a nesting of tuples
    and lists: what no other state, and no other place in it, may hold too."""
    if isinstance(state, (tuple, list)) and not (
            type(state) is list and len(state) == 1 and not isinstance(state[0], nd.NDArray)):
        return [found for item in state for found in state_objects(item)]
    return [] if state is None else [state]


def _structure(state):
    """``state``'s nesting, as a short text: ``(NDArray, (NDArray, NDArray))``."""
    if isinstance(state, (tuple, list)):
        return '(' + ', '.join(_structure(s) for s in state) + ')'
    return type(state).__name__


def route(layout, optimizer):
    """The route that updates a parameter.

    Parameters
    ----------
    layout : Layout
        Of the weight and its gradient.
    optimizer : MyAdam
        Or any object with its attributes ``fused``, ``amsgrad``, ``yogi``, ``decoupled_wd``,
        ``epsilon_mode`` and, read for a row_sparse gradient, ``lazy_update``.
        ``fused=False`` always gives ``'textbook'``; the others decide whether
        MXNet's operator is exact.

    Returns
    -------
    str
        ``'kernel'``, ``'operator'`` or ``'textbook'``. A weight of
        :data:`KERNEL_DTYPES` in host memory (:data:`HOST_DEVICE_TYPES`) takes
        ``'kernel'`` when :data:`adam_plugin.kernel.LIBRARY` was built (a
        ``row_sparse`` one that does not store every row then takes ``'textbook'``:
        :class:`Batch` sees to it).
    """
    if not optimizer.fused:
        return TEXTBOOK
    if (layout.device_type in HOST_DEVICE_TYPES and layout.grad_in_host_memory
            and kernel.LIBRARY is not None):
        return KERNEL if layout.dtype in KERNEL_DTYPES else TEXTBOOK
    if (not layout.dense or layout.dtype not in OPERATOR_DTYPES
            or (layout.row_sparse_grad and optimizer.lazy_update)):
        return TEXTBOOK
    if (not optimizer.amsgrad and not optimizer.yogi and not optimizer.decoupled_wd
            and optimizer.epsilon_mode in ('outside', 'hat')):
        return OPERATOR
    return TEXTBOOK


class Batch:
    """The parameters of one update call, each with its :func:`route`, decided once.

    ``MyAdam`` asks :meth:`finite` which gradients hold only finite values, then
    hands :meth:`apply` a step for each parameter to update.

    Parameters
    ----------
    optimizer : MyAdam
        See :func:`route`.
    layouts : list of Layout
        One per parameter, from :class:`CheckedLayouts`.
    weights, grads : list of NDArray
    states : list of tuple of NDArray
        As made by ``MyAdam.create_state_multi_precision``: ``(m, v[, vmax], [t])``, or
        ``(master, (m, v[, vmax], [t]))`` for a float16 weight under ``multi_precision``
        (a state saved without ``[t]`` is taken too: see :attr:`step_counts`).
    multi_precision : bool
        Whether float16 weights step on their float32 master copy.
    name : callable
        ``name(position)``, the parameter as error messages call it.

    Attributes
    ----------
    dtypes : list of tuple
        Per parameter, ``(computed_in, stored_in)``: the dtype its step computes in
        (float32 for float16) and the dtype of the weight it writes (the float32 master
        copy of a float16 weight under ``multi_precision``), which the values the step
        reads must fit (see :func:`adam_plugin.options.step_value`).
    distinct_dtypes : frozenset
        Those of :attr:`dtypes`.
    step_counts : list
        One per parameter: the one-item list ``[t]`` that ends its state, where its
        step count is counted in place, or None for a state saved without it
        (``MyAdam`` then counts in its own per-device counts).
    layouts : list of Layout
        As given.

    Raises
    ------
    ValueError
        If a ``row_sparse`` gradient holds a row outside its weight or a row twice, on
        every route; before anything is read or written.
    """

    def __init__(self, optimizer, layouts, weights, grads, states, multi_precision,
                 name=str):
        self.weights, self.states, self.layouts = list(weights), states, layouts
        self.multi_precision = multi_precision
        self.name = name
        self.routes = [route(layout, optimizer) for layout in layouts]
        self.grads = list(grads)
        self.dtypes, self.step_counts = [], []
        groups = {}  # kernel storage -> [(position, the parameter as a HandleTable takes it)]
        # What refresh reads again. Position of a row_sparse gradient -> (its weight's rows,
        # where the kernel's lazy step takes the gradient's rows: (HandleTable, position in
        # it), or None); and (position, rows, master) of each row_sparse weight that the
        # kernel steps as a dense one, as it stores every row.
        row_sparse, self._every_row = {}, []
        for i, (way, layout) in enumerate(zip(self.routes, layouts, strict=True)):
            master = multi_precision and layout.dtype == FLOAT16
            computed_in = FLOAT32 if layout.dtype == FLOAT16 else layout.dtype
            self.dtypes.append((computed_in, computed_in if master else layout.dtype))
            moments, copy, count = _split(states[i], master)
            self.step_counts.append(count)
            rows = _rows(grads[i], layout.shape[0], name(i)) if layout.row_sparse_grad else None
            if rows is not None:
                row_sparse[i] = layout.shape[0], None
            if way == KERNEL and not layout.dense:
                if self._weight_stores_every_row(i, layout.shape[0], master):
                    self._every_row.append((i, layout.shape[0], master))
                else:
                    self.routes[i] = way = TEXTBOOK
            if way == TEXTBOOK:
                continue
            lazy = layout.row_sparse_grad and optimizer.lazy_update  # only on the kernel
            if layout.row_sparse_grad and not lazy:
                self.grads[i] = grads[i].tostype('default')
            if way == KERNEL:
                groups.setdefault(kernel.storage(layout.dtype, master), []).append(
                    (i, (layout.shape, weights[i], self.grads[i], moments, copy,
                         rows if lazy else None)))
        self.distinct_dtypes = frozenset(self.dtypes)
        self.kernel_groups = [  # (positions, kernel.HandleTable)
            ([i for i, _ in group], kernel.HandleTable(storage, [p for _, p in group]))
            for storage, group in groups.items()]
        for positions, table in self.kernel_groups:
            for at, i in enumerate(positions):
                if i in row_sparse and table.lazy(at):
                    row_sparse[i] = row_sparse[i][0], (table, at)
        self._row_sparse = row_sparse
        # Every weight dense or stepped as a dense one by the kernel, and every row_sparse
        # gradient read as it is (lazy on the kernel, or by the textbook path): nothing
        # here changes while the arrays are the same but what refresh reads again, so
        # :class:`Batches` may reuse it.
        self.reusable = all(layout.dense or way == KERNEL
                            for layout, way in zip(layouts, self.routes, strict=True)) and all(
            self.grads[i] is grads[i] for i in row_sparse)
        # What :meth:`queue` takes: one parameter, dense and whole, on the kernel.
        self.queueable = (len(layouts) == 1 and layouts[0].dense and not row_sparse
                          and self.routes == [KERNEL])
        # The one HandleTable that holds every parameter, in order, or None.
        self._whole = (self.kernel_groups[0][1] if len(self.kernel_groups) == 1
                       and len(self.kernel_groups[0][0]) == len(layouts) else None)

    def refresh(self):
        """For a :attr:`reusable` Batch used again: read again, checked as when it was
        made, what changes while the arrays are the same: the rows each row_sparse
        gradient holds (for the kernel's lazy step), and whether each row_sparse weight
        that the kernel steps as a dense one still stores every row. False when one does
        not (a new Batch is to be made: it takes another route); ``ValueError``,
        nothing changed, as :class:`Batch` raises it."""
        if not all(self._weight_stores_every_row(*found) for found in self._every_row):
            return False
        found = [(_rows(self.grads[i], weight_rows, self.name(i)), place)
                 for i, (weight_rows, place) in self._row_sparse.items()]
        for rows, place in found:
            if place is not None:
                place[0].set_rows(place[1], rows)
        return True

    def rebind(self, weight, grad):
        """For a :attr:`reusable` Batch of one parameter: take ``weight`` and ``grad``, new
        objects of the layouts it was made with (the KVStore's callback hands new ones
        at every call), in place of its own, then :meth:`refresh`."""
        self.weights, self.grads = [weight], [grad]
        for _, table in self.kernel_groups:
            table.use_arrays(weight, grad)
        return self.refresh()

    def _weight_stores_every_row(self, i, rows, master):
        """Does the row_sparse weight at position ``i`` (and its master copy, when that is
        row_sparse too) store all its ``rows``?"""
        return all(_stores_every_row(array, rows) for array in
                   _row_sparse_arrays(self.weights[i], self.states[i], master))

    def finite(self):
        """One flag per gradient: does it hold only finite values?

        Gradients on the kernel route are read by :meth:`adam_plugin.kernel.HandleTable.all_finite`,
        one pass per dtype; the others by MXNet's ``multi_all_finite`` (one engine
        sync per context and dtype when they are finite, then one per gradient).
        """
        if self._whole is not None:
            return self._whole.all_finite()
        flags = [None] * len(self.grads)
        for positions, table in self.kernel_groups:
            for i, ok in zip(positions, table.all_finite(), strict=True):
                flags[i] = bool(ok)
        others = [i for i, way in enumerate(self.routes) if way != KERNEL]
        if others:
            for i, ok in zip(others, _finite_by_operators([self.grads[i] for i in others]), strict=True):
                flags[i] = ok
        return flags

    def apply(self, steps):
        """Update in place every parameter ``i`` whose ``steps[i]`` is a Step (not None).

        The kernel route makes one launch per dtype for all of its parameters.

        Returns
        -------
        list of int
            One per parameter: :data:`adam_plugin.kernel.V_OVERFLOW` if its second moment
            ``v``, :data:`adam_plugin.kernel.W_OVERFLOW` if its weight holds an Inf or a
            NaN after the step (0 for a parameter not stepped), in what the step wrote (a
            lazy step: the rows it holds). The kernel reports them from the step's own
            pass; MXNet's ``multi_all_finite`` reads the ``v`` buffers and the weights of
            the others.
        """
        if self._whole is not None:
            return self._whole.adam_steps(steps)
        flags = [0] * len(steps)
        for positions, table in self.kernel_groups:
            for i, found in zip(positions, table.adam_steps([steps[i] for i in positions]), strict=True):
                flags[i] = found
        self._apply_others(steps, flags)
        return flags

    def checked_apply(self, steps):
        """:meth:`apply` of the parameters whose gradient holds only finite values, the
        others left untouched: ``(finite, flags)``, :meth:`finite`'s flags and
        :meth:`apply`'s. The kernel checks each gradient just before it steps the
        parameter, in the same call (:meth:`adam_plugin.kernel.HandleTable.checked_steps`);
        the other routes' gradients are checked first, as :meth:`finite` does.

        ``steps``: a Step for every parameter (none None)."""
        if self._whole is not None:
            return self._whole.checked_steps(steps)
        finite, flags = [True] * len(steps), [0] * len(steps)
        for positions, table in self.kernel_groups:
            found = table.checked_steps([steps[i] for i in positions])
            for i, ok, flag in zip(positions, *found, strict=True):
                finite[i], flags[i] = ok, flag
        others = [i for i, way in enumerate(self.routes) if way != KERNEL]
        if others:
            for i, ok in zip(others, _finite_by_operators([self.grads[i] for i in others]), strict=True):
                finite[i] = ok
            self._apply_others([step if way != KERNEL and ok else None for step, way, ok
                                in zip(steps, self.routes, finite, strict=True)], flags)
        return finite, flags

    def _apply_others(self, steps, flags):
        """:meth:`apply` of the parameters off the kernel route, their flags set in ``flags``."""
        others = [i for i, way in enumerate(self.routes) if steps[i] is not None and way != KERNEL]
        for i in others:
            if self.routes[i] == OPERATOR:
                operator_step(self.weights[i], self.grads[i], self.states[i], steps[i])
            else:
                textbook_step(self.weights[i], self.grads[i], self.states[i], steps[i],
                              self.multi_precision)
        written = {}  # parameter -> (its v, its weight): what its step wrote of them
        for i in others:
            master = self.multi_precision and self.weights[i].dtype == FLOAT16
            arrays = [_written(a, self.grads[i], steps[i])
                      for a in (_split(self.states[i], master)[0][1], self.weights[i])]
            if arrays[0] is not None:
                written[i] = arrays
        if written:
            finite = _finite_by_operators([a for arrays in written.values() for a in arrays])
            for i, v_ok, w_ok in zip(written, finite[::2], finite[1::2], strict=True):
                flags[i] = (0 if v_ok else kernel.V_OVERFLOW) | (0 if w_ok else kernel.W_OVERFLOW)

    def queue(self, step, weight, grad):
        """Queue the step of the one parameter with ``step`` in MXNet's engine and return at
        once, for a :attr:`queueable` batch: see :meth:`adam_plugin.kernel.HandleTable.queue`,
        which takes ``weight`` and ``grad`` (of a later call) in place of the batch's.
        Returns the :class:`adam_plugin.kernel.Queued`, or None when an array is not one
        the step takes (nothing queued)."""
        return self._whole.queue(step, weight, grad)


class Batches:
    """The :class:`Batch` of each update call, made once for the arrays a ``Trainer``
    hands at every step.

    MXNet's Updater hands the same weight, gradient and state objects at every step (one
    list per device, or per set of parameters with fresh gradients under
    ``ignore_stale_grad``): the Batch made for a list of several parameters is kept, the
    last :data:`BATCHES_KEPT` in all, and reused while the same indices come with the same
    objects and the options :func:`route` reads are the same; a new one for the same
    indices on the same device replaces the old one. The Batch of a single parameter is
    kept per index (:data:`BATCHES_KEPT` at most: one per device) and reused while
    its state is the same object and its weight and gradient have the same layouts: the
    KVStore's callback hands new weight and gradient objects for the same arrays at
    every call (:meth:`Batch.rebind`). A reused Batch reads again what changes between
    calls (:meth:`Batch.refresh`: the rows of row_sparse gradients); one with a gradient
    made dense for the step, or a row_sparse weight that does not store every row, is
    made anew at each call.

    Parameters
    ----------
    layouts : CheckedLayouts
        Which reads and checks the layouts of a new Batch.
    name : callable
        ``name(index)``, the parameter as error messages call it.
    """

    def __init__(self, layouts, name):
        self.layouts, self._name = layouts, name
        self._kept = []  # ((indices, device), key, arrays, Batch), the newest first
        self._one = {}  # index -> [(key, state, Batch)] of one parameter, the newest first

    def __call__(self, optimizer, indices, weights, grads, states, multi_precision):
        """The :class:`Batch` of an update call (see :class:`Batch` for the arguments,
        ``indices`` the parameters' indices)."""
        key = (multi_precision, _ROUTE_OPTIONS(optimizer), kernel.LIBRARY, tuple(indices))
        several = len(indices) > 1
        if several:
            arrays = (*weights, *grads, *states)
            for _, kept_key, kept_arrays, batch in self._kept:
                if (kept_key == key and len(kept_arrays) == len(arrays)
                        and all(map(operator.is_, kept_arrays, arrays)) and batch.refresh()):
                    return batch
        layouts = [self.layouts(*args, multi_precision)
                   for args in zip(indices, weights, grads, states, strict=True)]
        if not several:  # the same state, arrays of the same layouts (the KVStore's new objects)
            kept = self._one.setdefault(indices[0], [])
            for at, (kept_key, state, batch) in enumerate(kept):
                if (kept_key == key and state is states[0]
                        and (batch.layouts[0] is layouts[0] or batch.layouts == layouts)):
                    del kept[at]
                    if batch.rebind(weights[0], grads[0]):
                        kept.insert(0, (key, state, batch))
                        return batch
                    break
        batch = Batch(optimizer, layouts, weights, grads, states, multi_precision,
                      lambda i: self._name(indices[i]))
        if batch.reusable and not several:
            kept.insert(0, (key, states[0], batch))
            del kept[BATCHES_KEPT:]
        elif batch.reusable:
            # A Batch for the same parameters on the same device is replaced, not kept
            # beside this one: its arrays (a net cast or moved, states loaded) are gone.
            place = (tuple(indices), weights[0].context)
            self._kept = ([(place, key, arrays, batch)]
                          + [kept for kept in self._kept if kept[0] != place])[:BATCHES_KEPT]
        return batch


BATCHES_KEPT = 8  # the Batches that Batches keeps: of lists in all, of one parameter per index

# The options route() and Batch read of the optimizer.
_ROUTE_OPTIONS = operator.attrgetter('fused', 'amsgrad', 'yogi', 'decoupled_wd', 'epsilon_mode',
                                     'lazy_update')


def _split(state, master):
    """``(moments, master copy, step count)`` of a parameter's state ``(m, v[, vmax], [t])``,
    or ``(master, (m, v[, vmax], [t]))`` for a float16 weight stepped on a float32 master
    copy: ``(m, v[, vmax])``, the master copy (else None) and the one-item list ``[t]``
    (None in a state saved without it, ``(m, v[, vmax])``)."""
    inner, copy = (state[1], state[0]) if master else (state, None)
    if type(inner[-1]) is list:
        return tuple(inner[:-1]), copy, inner[-1]
    return inner, copy, None


def _row_sparse_arrays(weight, state, master):
    """A row_sparse ``weight`` and, under ``master``, its master copy when that is
    row_sparse too (``astype`` keeps the storage): what the kernel steps in place."""
    return [weight] + ([state[0]] if master and state[0].stype == 'row_sparse' else [])


def _written(array, grad, step):
    """What a step of ``grad`` wrote of ``array``, a weight or a state buffer: with a lazy
    ``row_sparse`` gradient the rows it holds (of a ``row_sparse`` weight, those it
    stores; None when it holds none), else all of it."""
    if grad.stype != 'row_sparse' or not step.lazy_update:
        return array
    if not grad.indices.shape[0]:
        return None
    if array.stype == 'row_sparse':
        return nd.sparse.retain(array, grad.indices)
    return nd.take(array, grad.indices)


def _stores_every_row(weight, rows):
    """Does the ``row_sparse`` ``weight`` store all its ``rows``? Its values are then laid
    out as the dense weight's (MXNet keeps the stored rows sorted and distinct)."""
    return mxnet_internals.stored_rows(weight) == rows


def _rows(grad, weight_rows, name):
    """The rows a ``row_sparse`` ``grad`` stores, as a NumPy int64 array, each checked
    to be one of the weight's ``weight_rows`` and to be there once: the kernel writes
    where they point, and so do MXNet's ``tostype`` (a gradient densified) and NDArray
    indexing (the textbook route): a row outside the weight corrupts memory; a row held
    twice has no single meaning."""
    rows = kernel.sparse_rows(grad, weight_rows)  # when the kernel reads them, and good
    if rows is not None:
        return rows
    rows = grad.indices.asnumpy().astype(numpy.int64, copy=False)
    bad = rows[(rows < 0) | (rows >= weight_rows)]
    if bad.size:
        raise ValueError(f"myadam: the row_sparse gradient of {name} holds row {bad[0]}, "
                         f"outside its weight's {weight_rows} rows; nothing was updated")
    if rows.size > 1 and not (rows[1:] > rows[:-1]).all():  # MXNet's are sorted: one pass
        unique, counts = numpy.unique(rows, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"myadam: the row_sparse gradient of {name} holds row "
                             f"{unique[counts > 1][0]} {counts[counts > 1][0]} times, where "
                             "a row may be once; nothing was updated")
    return rows


# MXNet 1.9.1's multi_all_finite aborts the process when given much more than 200
# arrays; its own AMP loss scaler checks in chunks of 200 too.
_FINITE_CHUNK = 200


def _all_finite(arrays):
    """Whether every array holds only finite values: one engine sync per context and dtype.

    ``multi_all_finite`` takes arrays of one context and one dtype, at most
    ``_FINITE_CHUNK`` at a time; each group accumulates into one flag.
    """
    groups = {}
    for a in arrays:
        groups.setdefault((a.context, a.dtype), []).append(a)
    flags = []
    for (ctx, _), group in groups.items():
        flag = nd.ones((1,), ctx=ctx)
        for i in range(0, len(group), _FINITE_CHUNK):
            chunk = group[i:i + _FINITE_CHUNK]
            nd.multi_all_finite(*chunk, num_arrays=len(chunk), init_output=False, out=flag)
        flags.append(flag)
    return all(flag.asscalar() for flag in flags)


def _finite_by_operators(grads):
    """One flag per gradient, by MXNet's operators (row_sparse: its stored rows)."""
    values = [g.data if g.stype == 'row_sparse' else g for g in grads]
    if _all_finite(values):
        return [True] * len(values)
    return [bool(nd.contrib.isfinite(v).min().asscalar()) if v.size else True for v in values]


def textbook_step(weight, grad, state, step, multi_precision):
    """:func:`adam_plugin.textbook.adam_step`; a float16 weight under ``multi_precision``
    steps its float32 master copy ``state[0]`` and receives the result cast back.

    A float16 weight without ``multi_precision`` is stepped in float32 too, as MXNet's
    ``half_t`` arithmetic does: weight, gradient and moments are read as float16, the
    whole rule runs on float32 copies, and the results are stored as float16. Rounded
    at every operation instead, ``(1 - beta2) * g`` underflows and a moment over
    65504 mid-expression becomes Inf."""
    moments, master, _ = _split(state, multi_precision and weight.dtype == numpy.float16)
    if weight.dtype != numpy.float16:
        textbook.adam_step(weight, grad, moments, step)
    elif master is not None:
        textbook.adam_step(master, grad.astype(numpy.float32), moments, step)
        weight[:] = master.astype(weight.dtype)  # not nd.cast: it has no row_sparse form
    else:
        wide = [a.astype(numpy.float32) for a in (weight, *moments)]
        textbook.adam_step(wide[0], grad.astype(numpy.float32), tuple(wide[1:]), step)
        for narrow, result in zip((weight, *moments), wide, strict=True):
            narrow[:] = result.astype(numpy.float16)


def operator_step(weight, grad, state, step):
    """The step by MXNet's ``adam_update``, exact for 'outside' and 'hat' without AMSGrad
    or Yogi.

    ``adam_update`` computes, after the same ``rescale_grad``, coupled ``wd`` and
    clipping, ``w - lr' * m / (sqrt(v) + epsilon')``. With
    ``lr' = lr * sqrt(1 - beta2**t) / (1 - beta1**t)`` this is the 'hat' rule for
    ``epsilon' = epsilon``, and the 'outside' rule for
    ``epsilon' = epsilon * sqrt(1 - beta2**t)`` (divide numerator and denominator
    by ``sqrt(1 - beta2**t)``).
    """
    root_bc2 = math.sqrt(step.bias_correction2)
    epsilon = step.epsilon * root_bc2 if step.epsilon_mode == 'outside' else step.epsilon
    kwargs = dict(lr=step.lr * root_bc2 / step.bias_correction1, wd=step.wd,
                  beta1=step.beta1, beta2=step.beta2, epsilon=epsilon,
                  rescale_grad=step.rescale_grad)
    if step.clip_gradient is not None:
        kwargs['clip_gradient'] = step.clip_gradient
    if not all(value == 0 or FLOAT32_TINY <= abs(value) <= FLOAT32_MAX
               for value in kwargs.values()):
        # adam_update parses its hyperparameters as float32 and refuses one it cannot hold
        # as a normal number ("Out of range value for lr": a tiny learning rate once the
        # bias corrections are folded in): the textbook route takes the step.
        textbook_step(weight, grad, state, step, False)
        return
    mean, var = _split(state, False)[0]
    nd.adam_update(weight, grad, mean, var, out=weight, **kwargs)  # grad is dense (Batch)


FLOAT32_TINY = float(numpy.finfo(numpy.float32).tiny)
FLOAT32_MAX = float(numpy.finfo(numpy.float32).max)
