"""The whole Adam step in one pass over memory, on MXNet's own CPU buffers.

Public: :func:`variants`, :func:`variant` and :func:`use_variant`; the rest is internal.

The pass is compiled C++ (``adam_plugin/_kernel.cpp``), built by ``setup.py`` when the
package is installed, as the plain shared library ``libadam_kernel.so`` beside this file,
and loaded here with ctypes: nothing is compiled at run time. When it was not built (no
C++ compiler at install time), ``LIBRARY`` is None, importing this module warns once,
and the package's dispatch sends CPU parameters where it sends GPU ones.

The library's loops over elements come in variants, one per instruction set (on x86-64:
``'avx512f'``, ``'avx2'``, ``'baseline'``; a build with ``ADAM_PLUGIN_NATIVE=1``: only
``'native'``). Loading picks the widest this CPU runs; :func:`use_variant` picks another.
All variants round every operation alike, so they give the same numbers.

How the buffers are reached: the kernel, on the calling thread, first waits for
the MXNet engine: the check for Inf/NaN for the pending writes to each gradient it
reads (``MXNDArrayWaitToRead``), the step for all pending work
(``MXNDArrayWaitAll``), so no engine operation still reads or writes any of the
arrays. It then asks MXNet for each array's data pointer (``MXNDArrayGetData``) and
reads and writes the memory directly. Nothing is copied. MXNet does not know about
these writes, which is safe because they are finished before the function returns
and the engine has nothing in flight on those arrays.

Or the step is queued in MXNet's engine (``HandleTable.queue``, for the KVStore's
one-parameter calls: see docs/mxnet-modes.md), as MXNet's own operators are: an engine
operation (``MXEnginePushSyncND``) that reads the gradients and writes the weights and
states, so the engine runs it after the pending writes to the gradients and every
pending use of the others, and orders later operations after it. The call returns at
once; a ``Queued`` tells what the step found once it ran.

A whole list of parameters is one call, the arrays passed as tables of handles and
sizes; the call releases the GIL. Calls over at least ``PARALLEL_MIN`` elements are
shared by ``THREADS`` threads (the caller's and a pool kept by the kernel), which
take the list, laid end to end, in pieces of 2^18 elements; smaller calls run on the
calling thread alone, where waking another costs more than it saves.
"""
__all__ = ['variants', 'variant', 'use_variant']

import ctypes
import functools
import math
import operator
import os
import re

import numpy as np

from . import _warn, mxnet_internals

PARALLEL_MIN = 1 << 20

# Columns of the per-step constants table (see :func:`constants`): name -> its value
# for a step, in the order of ``enum Column`` in _kernel.cpp, whose names the library
# gives (``columns()``): :func:`load` refuses a library whose columns are not these.
COLUMNS = {
    'RESCALE': lambda step: step.rescale_grad,
    'WD': lambda step: step.coupled_wd,
    'CLIP': lambda step: math.inf if step.clip_gradient is None else step.clip_gradient,
    'BETA1': lambda step: step.beta1,
    'ONE_MINUS_BETA1': lambda step: 1.0 - step.beta1,
    'BETA2': lambda step: step.beta2,
    'ONE_MINUS_BETA2': lambda step: 1.0 - step.beta2,
    'BC1': lambda step: step.bias_correction1,
    'BC2': lambda step: step.bias_correction2,
    'EPS_INSIDE': lambda step: step.epsilon if step.epsilon_mode == 'inside' else 0.0,
    'EPS_OUTSIDE': lambda step: {
        'outside': step.epsilon, 'inside': 0.0,
        'hat': step.epsilon / math.sqrt(step.bias_correction2)}[step.epsilon_mode],
    'DECAY': lambda step: 1.0 - step.lr * step.wd if step.decoupled_wd else 1.0,
    'LR': lambda step: step.lr,
    'YOGI': lambda step: 1.0 if step.yogi else 0.0,
}


# What a step found in what it wrote of a parameter, flags (``enum Overflow`` in
# _kernel.cpp): a second moment, a weight that is Inf or NaN although the gradient was
# finite. 0: neither.
V_OVERFLOW, W_OVERFLOW = 1, 2


# The kernel's storages: name -> (dtype of the weight, dtype the step is computed in).
STORAGES = {
    'float32': (np.dtype(np.float32), np.dtype(np.float32)),
    'float64': (np.dtype(np.float64), np.dtype(np.float64)),
    # float16 weights, gradients and moments, each element computed in float32
    'float16': (np.dtype(np.float16), np.dtype(np.float32)),
    # float16 weights and gradients, a float32 master copy of the weight and float32 moments
    'float16_master': (np.dtype(np.float16), np.dtype(np.float32)),
}


_FINITE = {name: 'finite_' + dtype.name for name, (dtype, _) in STORAGES.items()}

# The library's functions that the package calls by name (load checks that it has them).
ENTRY_POINTS = ('columns', 'use_mxnet', 'variants', 'variant_in_use', 'variant_runs_here',
                'use_variant', 'queued_done', 'queued_flags', 'queued_release', 'sparse_rows',
                'describe',
                *sorted(set(_FINITE.values())),
                *(f'{kind}adam_{name}' for name in STORAGES
                  for kind in ('', 'checked_', 'queue_')))
_STORAGE_OF = {(dtype, master): name + ('_master' if master else '')
               for name, (dtype, _) in STORAGES.items() if not name.endswith('_master')
               for master in (False, True) if dtype == np.float16 or not master}


def storage(dtype, master):
    """The kernel's name (a key of :data:`STORAGES`) for weights of ``dtype`` (a NumPy
    dtype), stepped on a float32 master copy or not; None when it has no loop for them."""
    return _STORAGE_OF.get((dtype, master))


def _threads():
    """``OMP_NUM_THREADS``, which MXNet's CPU operators obey too; else the number of CPUs
    this process may run on.

    As MXNet 1.9.1 does: a value that is not an integer is an error (MXNet aborts the
    process on it); an integer below 1 (``0``, ``-1``) is accepted with a warning and
    the default, as OpenMP (libgomp), which MXNet asks, ignores it and uses its default.
    """
    setting = os.environ.get('OMP_NUM_THREADS', '').strip()
    default = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
               else os.cpu_count())
    if not setting:
        return default
    if not re.fullmatch(r'[+-]?[0-9]+', setting):
        raise ValueError(f"adam_plugin: OMP_NUM_THREADS={setting!r} is not an integer")
    if int(setting) < 1:
        _warn.warn(f"adam_plugin: OMP_NUM_THREADS={setting!r} is not a positive integer; "
                   f"OpenMP ignores it, and so MXNet does: the kernel takes the default too, "
                   f"{default} threads (the CPUs this process may run on)")
        return default
    return int(setting)


THREADS = _threads()


PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'libadam_kernel.so')


def load(path=PATH):
    """The kernel library at ``path`` with its functions typed, or None (with a warning)."""
    if not os.path.exists(path):
        _warn.warn("adam_plugin: the compiled kernel adam_plugin/_kernel.cpp was not built "
                   "(it needs a C++ compiler when the package is installed); CPU parameters "
                   "take MXNet's adam_update where it is exact, else the slower textbook path")
        return None
    library = ctypes.CDLL(path)
    pointer, count, flag, name = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_char_p
    try:
        library.columns.restype = name
        columns = library.columns().decode().split()
    except AttributeError:  # built from a _kernel.cpp that did not give them
        columns = []
    missing = [entry for entry in ENTRY_POINTS if not hasattr(library, entry)]
    if columns != list(COLUMNS) or missing:
        given = ' '.join(columns) or 'not given'
        differs = (f"its constants' columns ({given}) are not this package's "
                   f"({' '.join(COLUMNS)})" if columns != list(COLUMNS)
                   else f"it lacks {', '.join(missing)}")
        _warn.warn(f"adam_plugin: the compiled kernel {path} was built from another "
                   f"adam_plugin/_kernel.cpp: {differs}; reinstalling the package rebuilds it. "
                   "CPU parameters take MXNet's adam_update where it is exact, else the "
                   "slower textbook path")
        return None
    addresses = mxnet_internals.kernel_functions()
    library.use_mxnet.argtypes = [pointer] * len(addresses)
    library.use_mxnet(*addresses)
    library.variants.restype = library.variant_in_use.restype = name
    library.use_variant.argtypes = library.variant_runs_here.argtypes = [name]
    for name in STORAGES:
        getattr(library, f'adam_{name}').argtypes = [
            count, pointer, pointer, pointer, pointer, pointer, pointer, flag, pointer, flag]
        getattr(library, f'checked_adam_{name}').argtypes = [
            count, pointer, pointer, pointer, pointer, pointer, pointer, flag, pointer, pointer,
            flag]
        getattr(library, f'queue_adam_{name}').argtypes = [
            pointer, count, pointer, flag, flag, pointer]
    library.queued_done.argtypes = [pointer, count]
    library.queued_release.argtypes = [pointer]
    library.queued_flags.argtypes = [pointer, pointer, pointer]
    library.queued_release.restype = None
    library.sparse_rows.argtypes = [pointer, count, count, ctypes.POINTER(pointer),
                                    ctypes.POINTER(count)]
    library.describe.argtypes = [count, pointer, pointer, count]
    library.describe.restype = count
    # For the tests: the elements of a piece of work (2^18 unless set), so that small arrays
    # cross pieces as large ones do; PARALLEL_MIN, read at each call, is the other threshold.
    library.set_piece_size.argtypes = [count]
    library.set_piece_size.restype = count
    for dtype in ('float16', 'float32', 'float64'):
        getattr(library, f'finite_{dtype}').argtypes = [count, pointer, pointer, pointer, flag]
    return library


LIBRARY = load()


def variants():
    """The names of the kernel's variants, widest first: all that were compiled; ``[]``
    when the kernel was not built."""
    return [] if LIBRARY is None else LIBRARY.variants().decode().split()


def variant():
    """The name of the variant the kernel uses; None when the kernel was not built."""
    return None if LIBRARY is None else LIBRARY.variant_in_use().decode()


def runs_here(name):
    """Can this CPU run the kernel's variant ``name`` (one of :func:`variants`)?"""
    runs = LIBRARY.variant_runs_here(name.encode())
    if runs == -1:
        raise ValueError(f"runs_here: name={name!r} is not one of the kernel's variants "
                         f"{variants()}")
    return bool(runs)


def use_variant(name):
    """Make the kernel use the variant ``name`` (one of :func:`variants`) from its next call.

    Returns the name of the variant used until now. A ValueError names a variant that
    was not compiled or that this CPU cannot run, and says when the kernel is not loaded.
    """
    if LIBRARY is None:
        raise ValueError(f"use_variant: name={name!r}: the compiled kernel is not loaded (the "
                         "import's warning said why: not built, or built from another "
                         "_kernel.cpp), so it has no variants")
    if not runs_here(name):
        raise ValueError(f"use_variant: name={name!r}: this CPU cannot run that variant")
    previous = variant()
    LIBRARY.use_variant(name.encode())
    return previous


# The serialization sparse_rows reads copies the array's values too: for more than this
# many bytes of them, Python's ``indices`` (an engine operation, a handoff between threads)
# is quicker (measured on 128 float32 a row: 1 MB of values, 42 against 18 us; 25 MB, 2.8
# ms against 0.12).
SERIALIZED_MAX = 1 << 19


def sparse_rows(array, weight_rows):
    """The rows a ``row_sparse`` ``array`` stores, as a read-only NumPy int64 array, read
    by the kernel on the calling thread from MXNet's serialization of the array, once the
    pending writes to it are done (Python's ``indices`` is a copy by an engine operation:
    a handoff between threads even when the array is ready); only when each is below
    ``weight_rows`` and they are strictly increasing, as MXNet keeps them, and the array
    stores at most :data:`SERIALIZED_MAX` bytes of values. None otherwise, when the kernel
    does not read that serialization (NumPy shape semantics, rows that are not int64) or
    when it was not built: ``array.indices`` then has them."""
    if LIBRARY is None:
        return None
    rows, count = ctypes.c_void_p(), ctypes.c_int64()
    status = LIBRARY.sparse_rows(array.handle, weight_rows, SERIALIZED_MAX, ctypes.byref(rows),
                                 ctypes.byref(count))
    mxnet_internals.check(min(status, 0))
    if status == 1:
        return None
    return np.frombuffer(ctypes.string_at(rows.value, 8 * count.value), np.int64)


# describe's values per array at most: dtype, storage type, device type and id, ndim,
# then the shape, of up to 32 dimensions.
_DESCRIBED = 5 + 32


def describe(*arrays):
    """What :class:`adam_plugin.dispatch.CheckedLayouts` reads of ``arrays`` (each one's
    dtype, storage type, context and shape, as codes of MXNet's C API), as one tuple of
    ints, in one call: arrays that give the same tuple have the same layouts. None when
    the kernel was not built, or when the arrays have more dimensions than 32 each on
    average (MXNet makes such arrays; its Python refuses their shape)."""
    if LIBRARY is None:
        return None
    n = len(arrays)
    out = (ctypes.c_int64 * (_DESCRIBED * n))()
    count = LIBRARY.describe(n, (ctypes.c_void_p * n)(*[array.handle for array in arrays]),
                             out, _DESCRIBED * n)
    if count == -2:  # more than 32 dimensions
        return None
    mxnet_internals.check(min(count, 0))
    return tuple(out[:count])


@functools.lru_cache(maxsize=1024)
def constants(step, dtype):
    """The scalars of one step, computed in float64 and rounded to ``dtype`` once:
    ``(table, its address)``.

    Kept for the last 1024 distinct (step, dtype): parameters stepped alike (the same
    ``t``, ``lr`` and ``wd``) share one array, which nobody writes.

    They are the scalars :func:`adam_plugin.textbook.adam_step` hands MXNet's scalar
    operators, which round them to the array's dtype the same way. The three
    epsilon modes become ``(eps_inside, eps_outside)``: 'outside' ``(0, epsilon)``,
    'inside' ``(epsilon, 0)``, 'hat' ``(0, epsilon / sqrt(1 - beta2**t))``.
    ``decay = 1 - lr * wd`` with decoupled weight decay, else 1; ``wd`` is the
    coupled L2 coefficient (0 when decoupled). A missing ``clip_gradient`` is
    ``inf``: clipping to it changes nothing, NaN included. ``yogi`` is 1 for Yogi's
    second moment, else 0.
    """
    table = np.array([value(step) for value in COLUMNS.values()], dtype=dtype)
    table.flags.writeable = False
    return table, table.ctypes.data


class HandleTable:
    """A list of parameters of one storage as the kernel takes them, a table of their
    arrays' handles and sizes, and the kernel's calls on it: :meth:`all_finite`,
    :meth:`adam_steps` (of all of them or some, each with its row of constants),
    :meth:`checked_steps` (the two at once) and :meth:`queue`.

    Made with each :class:`adam_plugin.dispatch.Batch`, and kept with it for later calls
    on the same arrays (:class:`adam_plugin.dispatch.Batches`), which may come in new
    objects (:meth:`use_arrays`, :meth:`queue`: the KVStore's) and, lazy, with new rows
    (:meth:`set_rows`).

    Parameters
    ----------
    storage : str
        A key of :data:`STORAGES`.
    params : list of tuple
        ``(weight, grad, moments, master, rows)`` per parameter: host-memory arrays,
        the weight dense or ``row_sparse`` storing every row (its values are then laid
        out as a dense weight's), ``moments`` ``(m, v)`` or, for all of them,
        ``(m, v, vmax)``, dense, of the weight's shape and of the storage's dtype;
        ``master`` the float32 master copy (``'float16_master'``) or None. ``rows``:
        None, the gradient then dense and of the weight's shape; or a NumPy int64 array
        of rows (each in ``[0, weight.shape[0])``) present in a ``row_sparse`` gradient,
        whose stored values the kernel reads, stepping only those rows (lazy update).
    """

    def __init__(self, storage, params):
        if len({len(moments) for _, _, _, moments, _, _ in params}) != 1:
            raise ValueError("myadam: states of one call must all be (m, v) or all (m, v, vmax)")
        self.storage = storage
        self.dtype = STORAGES[storage][1]
        self._params = params  # the arrays whose handles the table holds, kept alive
        self._rows = [rows for *_, rows in params]
        handles, sizes, row_length = [[] for _ in range(6)], [], []
        for shape, weight, grad, moments, master, rows in params:
            length = math.prod(shape[1:])
            row_length.append(length)
            sizes.append(math.prod(shape) if rows is None else len(rows) * length)
            for column, array in zip(handles, (weight, grad, *moments, None, None)[:5] + (
                    master,), strict=True):
                column.append(0 if array is None else array.handle.value)
        n = len(params)
        # One table (a single allocation, its address read once): the handles, one row
        # of n per array, then per parameter its size, row length, rows (their address,
        # or 0) and row of constants when all share one (0).
        self._table = np.array(
            [h for column in handles for h in column] + sizes + row_length
            + [0 if rows is None else rows.ctypes.data for rows in self._rows] + [0] * n,
            dtype=np.uint64)
        base = self._table.ctypes.data
        self._arguments = [base + 8 * n * row for row in (0, 6, 7, 8, 9)]
        self._sizes, self._row_length = sizes, row_length  # the table's, as Python ints
        self._elements = sum(sizes)
        self.amsgrad_ready = len(params[0][3]) == 3
        self._queue = getattr(LIBRARY, 'queue_adam_' + storage)

    def use_arrays(self, weight, grad):
        """From the next call on, step ``weight`` with ``grad`` in place of the arrays of
        the table's one parameter: the same arrays in new objects, as the KVStore's
        callback hands them at every call. ``ValueError`` for a table of several parameters,
        whose handles are laid out otherwise."""
        if len(self._rows) != 1:
            raise ValueError(f"myadam: use_arrays takes the arrays of a table of one parameter; "
                             f"this one holds {len(self._rows)}")
        table = self._table  # its first row of handles: the weight's, then the gradient's
        table[0], table[1] = weight.handle.value, grad.handle.value
        self._arrays = weight, grad  # the table's handles now: kept alive

    def lazy(self, p):
        """Does the parameter at position ``p`` step only the rows of a row_sparse gradient?"""
        return self._rows[p] is not None

    def set_rows(self, p, rows):
        """From the next call on, the lazy parameter at position ``p`` steps ``rows``
        (a NumPy int64 array, as the constructor takes them): the rows its gradient
        holds now."""
        n = len(self._rows)
        self._rows[p] = rows  # kept alive: the table holds its address
        size = len(rows) * self._row_length[p]
        self._elements += size - self._sizes[p]
        self._sizes[p] = self._table[6 * n + p] = size
        self._table[8 * n + p] = rows.ctypes.data

    def all_finite(self):
        """One flag per gradient: does it hold only finite values (its stored rows, lazy)?

        One pass over all gradients, reading each element's bits: an element whose
        exponent field is all ones is an Inf or a NaN.
        """
        n = len(self._rows)
        finite = bytearray(b'\x01') * n
        grads = self._arguments[0] + 8 * n  # the second row of the handles
        mxnet_internals.check(getattr(LIBRARY, _FINITE[self.storage])(
            n, grads, self._arguments[1], (ctypes.c_char * n).from_buffer(finite),
            _threads_for(self._elements)))
        if 0 not in finite:  # the usual case, without a loop over the parameters
            return [True] * n
        return [flag == 1 for flag in finite]

    def adam_steps(self, steps):
        """Apply :func:`adam_plugin.textbook.adam_step` to the parameters in one call.

        Per element, with the constants of :func:`constants` for that parameter's step,
        each operation rounded to the compute dtype in the textbook's order (no fused
        multiply-add, no reciprocals), so the results equal the textbook path's::

            g     = g * rescale
            g     = g + wd * w                  (if wd, the coupled L2 term, is not 0)
            g     = clip(g, -clip, clip)
            m     = beta1 * m + (1 - beta1) * g
            v     = beta2 * v + ((1 - beta2) * g) * g
            v     = v + ((1 - beta2) * g) * g * sign(g * g - v)   (yogi, instead)
            vmax  = max(vmax, v);  v <- vmax    (step.amsgrad; needs 3 state buffers)
            m_hat = m / (1 - beta1**t)
            v_hat = v / (1 - beta2**t)
            u     = m_hat / (sqrt(v_hat + eps_inside) + eps_outside)
            w     = w * decay - lr * u

        float16 storages compute each element in float32: ``'float16'`` reads the
        float16 weight and moments and stores each result rounded to float16;
        ``'float16_master'`` steps the float32 master copy and writes the weight as
        its rounding to float16.

        Parameters
        ----------
        steps : list of Step or None
            One per parameter; None leaves that parameter untouched. Parameters
            given the same Step object share one row of constants.

        Returns
        -------
        list of int
            One per parameter: what the step found in the second moments ``v`` and the
            weights (a float16 one as stored) it wrote, :data:`V_OVERFLOW` and
            :data:`W_OVERFLOW` flags (checked in the same pass; 0 for a parameter left
            untouched).
        """
        keep, (arguments, table, amsgrad, threads) = self._launch(steps)
        if not keep:
            return [0] * len(steps)
        overflow = bytearray(len(keep))
        _, address = table
        mxnet_internals.check(getattr(LIBRARY, 'adam_' + self.storage)(
            len(keep), *arguments, address, amsgrad,
            (ctypes.c_char * len(keep)).from_buffer(overflow), threads))
        if len(keep) == len(steps) and not any(overflow):  # the usual case, without a loop
            return [0] * len(steps)
        flags = [0] * len(steps)
        for i, flag in zip(keep, overflow, strict=True):
            flags[i] = flag
        return flags

    def checked_steps(self, steps):
        """:meth:`adam_steps` of the parameters whose gradient holds only finite values
        (its stored rows, lazy), each gradient checked by the kernel just before the
        parameter is stepped, in the same call (:meth:`all_finite`'s check, without its
        pass over all of them first); a parameter whose gradient holds an Inf or a NaN
        is left untouched.

        Parameters
        ----------
        steps : list of Step
            One per parameter, as :meth:`adam_steps` takes them, none None.

        Returns
        -------
        (list of bool, list of int)
            Per parameter: did its gradient hold only finite values (else it was left
            untouched), and :meth:`adam_steps`'s flags of what its step wrote.
        """
        _, (arguments, table, amsgrad, threads) = self._launch(steps)
        n = len(steps)
        finite, overflow = bytearray(b'\x01') * n, bytearray(n)
        mxnet_internals.check(getattr(LIBRARY, 'checked_adam_' + self.storage)(
            n, *arguments, table[1], amsgrad, (ctypes.c_char * n).from_buffer(finite),
            (ctypes.c_char * n).from_buffer(overflow), threads))
        if 0 not in finite and not any(overflow):  # the usual case, without a loop
            return [True] * n, [0] * n
        return [flag == 1 for flag in finite], list(overflow)

    def queue(self, step, weight, grad):
        """Queue :meth:`adam_steps` of the table's one parameter with ``step`` in MXNet's
        engine, behind the pending writes to the gradient and every pending use of the
        weight and states, and return at once, as MXNet's own ``adam_update`` does.

        ``weight`` and ``grad``, dense, take the place of those this table was made with
        (the states are its own, checked by the dispatch before it made the table); the
        kernel checks that each holds the elements and dtype the step takes, dense, in
        host memory. The queued step checks the gradient first: when it holds an Inf or
        a NaN, the parameter is not stepped. For a table of one whole dense parameter (no
        lazy rows).

        The arrays' data pointers are read here: each must have been allocated already
        (written, and waited for, once). MXNet allocates an array's memory at its first
        use without a lock, so reading a new array while its first writer runs on an
        engine thread can allocate it twice, and the writer's values are lost.

        Returns
        -------
        Queued
            Or None, nothing queued, when an array is not one the step takes.
        """
        self.use_arrays(weight, grad)
        arguments, record = self._arguments, ctypes.c_void_p()
        status = self._queue(arguments[0], self._elements, constants(step, self.dtype)[1],
                             self._amsgrad((step,)), _threads_for(self._elements),
                             ctypes.byref(record))
        if status == -2:
            return None
        mxnet_internals.check(status)
        return Queued(record, weight)

    def _amsgrad(self, steps):
        """Does one of ``steps`` take AMSGrad? ``ValueError`` if so without vmax states."""
        amsgrad = any(map(_AMSGRAD, steps))
        if amsgrad and not self.amsgrad_ready:
            raise ValueError("myadam: amsgrad needs (m, v, vmax) states")
        return amsgrad

    def _launch(self, steps):
        """The positions of the parameters ``steps`` updates (its entries not None), and
        the arguments of a kernel call for them: the tables of handles, sizes, row
        lengths, rows and table rows (addresses), the constants (their table and its
        address), amsgrad, threads."""
        first = steps[0]
        if first is not None and steps.count(first) == len(steps):  # all alike: kept short
            return range(len(steps)), (self._arguments, constants(first, self.dtype),
                                       self._amsgrad((first,)), _threads_for(self._elements))
        keep, param_rows, rows = [], [], {}  # rows: id of a Step -> (its row in the table, it)
        for i, step in enumerate(steps):
            if step is not None:
                keep.append(i)
                param_rows.append(rows.setdefault(id(step), (len(rows), step))[0])
        if not keep:
            return keep, (None, None, None, None)
        distinct = [step for _, step in rows.values()]
        amsgrad = self._amsgrad(distinct)
        if len(distinct) == 1:
            table = constants(distinct[0], self.dtype)
        else:
            table = np.concatenate([constants(step, self.dtype)[0] for step in distinct])
            table = table, table.ctypes.data
        n = len(self._rows)
        columns = self._table.view(np.int64)
        kept = [np.ascontiguousarray(columns[:6 * n].reshape(6, n)[:, keep])] + [  # rows of len(keep)
            columns[row * n:(row + 1) * n][keep] for row in (6, 7, 8)] + [
            np.array(param_rows, dtype=np.int64)]
        self._kept = kept  # alive until the call: the kernel reads them
        return keep, ([array.ctypes.data for array in kept], table, amsgrad,
                      _threads_for(kept[1].sum()))


class Queued:
    """A step that :meth:`HandleTable.queue` handed to MXNet's engine: its results, once it
    ran. ``record``: the kernel's of it (a ``ctypes.c_void_p``), which :func:`queued_status`
    reads."""

    def __init__(self, record, weight):
        self.record, self._weight = record, weight
        self._release = LIBRARY.queued_release  # still there while the interpreter ends

    def status(self):
        """0 while the step has not run; then 1 when the gradient was finite and the
        step found no overflow, else 2 (:meth:`result` says what)."""
        return LIBRARY.queued_done(ctypes.byref(self.record), 1)

    def result(self):
        """Wait for the step to run; then ``(grad_finite, overflow)``: did the gradient
        hold only finite values (else the parameter was not stepped), and the
        :data:`V_OVERFLOW` and :data:`W_OVERFLOW` flags of what the step wrote (as
        :meth:`HandleTable.adam_steps`).

        An error of the engine's (an operation the step waited for failed, so it did not
        run) is raised as MXNet raises it.
        """
        status = self.status()
        if status == 0:
            self._weight.wait_to_read()  # the step writes it; raises the engine's error
            status = self.status()
        if status == 0:
            raise RuntimeError("myadam: a queued update did not run, and MXNet's engine "
                               "reported no error")
        if status == 1:
            return True, 0
        grad_finite, overflow = ctypes.c_uint8(), ctypes.c_uint8()
        LIBRARY.queued_flags(self.record, ctypes.byref(grad_finite), ctypes.byref(overflow))
        return grad_finite.value == 1, overflow.value

    def __del__(self):
        self._release(self.record)


def queued_status(queued):
    """:meth:`Queued.status` of every one of ``queued`` at once (one C call): 0 while one
    has not run; then 1 when each ran well, else 2."""
    records = (ctypes.c_void_p * len(queued))(*[q.record for q in queued])
    return LIBRARY.queued_done(records, len(queued))


_AMSGRAD = operator.attrgetter('amsgrad')


def _threads_for(elements):
    """:data:`THREADS` for a call over at least ``PARALLEL_MIN`` elements, else 1."""
    return THREADS if elements >= PARALLEL_MIN else 1
