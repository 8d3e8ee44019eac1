"""Every use of MXNet's private insides, each a small function that says why no public API serves.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

The rest of the package reaches MXNet's private insides only through this module: its
underscore names (but the protected API of ``mx.optimizer.Optimizer`` that MXNet's own
optimizers use: ``_get_lr``, ``_get_wd``, ``_update_count``, ``_index_update_count``,
``_all_index_update_counts``, ``_set_current_context``), its code objects and the frames
that run them, its C API (the functions the kernel calls too) and C structs, its
serialization format, what ``gluon.Trainer`` and ``gluon.Parameter`` keep to themselves,
and MXNet's own files. MXNet 1.7.0 to 1.9.1 keep them all alike; ``tests/test_mxnet_internals.py``
exercises each through what the package needs of it, so a release that changes one fails
there first, by name. ``import adam_plugin`` checks the MXNet release first
(:mod:`adam_plugin._mxnet`), before this module is imported. What a distributed KVStore's
scheduler runs is in :mod:`adam_plugin.mxnet_internals.scheduler`, which imports nothing
but the standard library: the launcher loads it alone.
"""
import ctypes
import struct
import sys
import types
from typing import NamedTuple

import numpy as np
from mxnet.base import _LIB, check_call
from mxnet.kvstore import KVStore, kvstore as _kvstore
from mxnet.ndarray.ndarray import _DTYPE_MX_TO_NP

from .scheduler import SCHEDULER_CODE as SCHEDULER_CODE

# --- The KVStore's updater callback -------------------------------------------------------
#
# With update_on_kvstore=True the KVStore runs the optimizer from C through a ctypes
# callback, updater_handle in mxnet/kvstore/kvstore.py; MXNet tells no one whether a call
# comes from there, and ctypes drops what the callback raises. Its code object is the
# one sign (see adam_plugin.deferred).


def _callback_code():
    """The code object of the KVStore's ctypes callback, ``updater_handle``: a constant of
    ``_updater_wrapper``'s, a private function of ``mxnet.kvstore.kvstore`` (no public name
    reaches it)."""
    for const in _kvstore._updater_wrapper.__code__.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == 'updater_handle':
            return const
    raise ImportError("adam_plugin: mxnet.kvstore.kvstore._updater_wrapper has no "
                      "updater_handle; this MXNet version is not supported")


CALLBACK_CODE = _callback_code()


def in_kvstore_callback(frame=None):
    """Whether ``frame`` (by default the caller's) runs inside the KVStore's updater
    callback: a frame up the stack runs its code (MXNet hands the callback's calls no sign
    of where they come from)."""
    return called_from(sys._getframe(1) if frame is None else frame, CALLBACK_CODE)


def callers_caller():
    """The frame that called the caller of this function: where a search up the stack
    (:func:`in_kvstore_callback`) may start, above the frames of the calls in between,
    each of which Python would otherwise make an object of, on demand."""
    return sys._getframe(2)


def called_from(frame, code, depth=None):
    """Is ``frame``, or a frame that called it (at most ``depth`` calls up), running ``code``?"""
    while frame is not None and depth != -1:
        if frame.f_code is code:
            return True
        frame = frame.f_back
        depth = None if depth is None else depth - 1
    return False


def raise_after_callback(pending, raise_pending):
    """Call ``raise_pending()`` at this thread's first Python call outside the KVStore's
    callback, while ``pending()`` (see :mod:`adam_plugin.deferred`), by a hook of the
    thread's that is free: its profile hook (``sys.setprofile``), else its trace hook
    (``sys.settrace``; ``cProfile`` and pyinstrument hold the first, debuggers and
    coverage the second), so that a profiler or a tracer keeps running as it was. The
    hook removes itself when it fires. Returns False, nothing arranged, when both are
    taken.

    A hook is the one way: no code of the package runs on the thread between ctypes
    returning into MXNet's C code and MXNet's call returning to the user's."""
    def deliver(frame, event, arg):
        if pending() and in_kvstore_callback(frame):
            return  # ctypes would swallow it here
        install(None)
        raise_pending()

    if sys.getprofile() is None:
        install = sys.setprofile
    elif sys.gettrace() is None:
        install = sys.settrace
    else:
        return False
    install(deliver)
    return True


# Updater.__init__ <- get_updater <- KVStore.set_optimizer reads aggregate_num (MXNet 1.7-1.9).
_KVSTORE_SET_OPTIMIZER = KVStore.set_optimizer.__code__


def read_by_kvstore_updater():
    """Is the caller's caller, which reads the optimizer's ``aggregate_num``, the making of
    the Updater a KVStore makes for itself (``KVStore.set_optimizer``)? MXNet's Updater
    reads it from the optimizer, once, in ``__init__``, and says to no one whose Updater it
    is: the frames up the stack do."""
    return called_from(sys._getframe(2), _KVSTORE_SET_OPTIMIZER, depth=3)


# --- MXNet's C API --------------------------------------------------------------------------
#
# The kernel (adam_plugin.kernel) reads and writes MXNet's arrays in place and queues its
# step in MXNet's engine, which only the C API offers.

# The functions of MXNet's C API the kernel calls (handed over by ``use_mxnet``, in this order).
KERNEL_FUNCTIONS = ('MXNDArrayGetData', 'MXNDArrayWaitToRead', 'MXNDArrayWaitAll',
                    'MXEnginePushSyncND', 'MXNDArrayGetShapeEx64', 'MXNDArrayGetDType',
                    'MXNDArrayGetStorageType', 'MXNDArrayGetContext', 'MXNDArraySaveRawBytes',
                    'MXNDArrayToDLPack', 'MXNDArrayCallDLPackDeleter')


def kernel_functions():
    """The addresses of :data:`KERNEL_FUNCTIONS` in MXNet's library, for the kernel's
    ``use_mxnet`` (MXNet's Python reaches its library as ``mxnet.base._LIB`` only)."""
    return [ctypes.cast(getattr(_LIB, name), ctypes.c_void_p) for name in KERNEL_FUNCTIONS]


def check(status):
    """Raise MXNet's last error as MXNet raises it (``MXNetError``) unless ``status``, what
    a call of MXNet's C API (or of the kernel, which passes on theirs) returned, is 0: MXNet's
    ``check_call``, its one reader of the last error."""
    check_call(status)


class _DLTensor(ctypes.Structure):
    """DLPack's DLTensor (dlpack.h, version 0.x, as MXNet 1.9.1 fills it)."""
    _fields_ = [('data', ctypes.c_void_p), ('device_type', ctypes.c_int),
                ('device_id', ctypes.c_int), ('ndim', ctypes.c_int), ('dtype', ctypes.c_uint32),
                ('shape', ctypes.POINTER(ctypes.c_int64)),
                ('strides', ctypes.POINTER(ctypes.c_int64)), ('byte_offset', ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [('dl_tensor', _DLTensor), ('manager_ctx', ctypes.c_void_p),
                ('deleter', ctypes.c_void_p)]


def stored_rows(array):
    """The number of rows a ``row_sparse`` ``array`` stores, without copying anything.

    Python's ``indices`` is a copy of them all; MXNet's DLPack view of the array describes
    its stored values (``data()``), whose first dimension this is, and Python reads a
    DLPack view only as a capsule for another library. Pending writes to the array, which
    may store other rows, are waited for.
    """
    array.wait_to_read()
    view = ctypes.c_void_p()
    check(_LIB.MXNDArrayToDLPack(array.handle, ctypes.byref(view)))
    try:  # from_address: ctypes.cast to a pointer type is slower
        return _DLManagedTensor.from_address(view.value).dl_tensor.shape[0]
    finally:
        check(_LIB.MXNDArrayCallDLPackDeleter(view))


# --- MXNet's serialization of an array ------------------------------------------------------
#
# NDArray::Save (src/ndarray/ndarray.cc, 1.7 to 1.9.1), which mx.nd.save, an array's pickle
# (NDArray.__getstate__) and MXNDArraySaveRawBytes write, little-endian:
#
#     uint32 magic                 0xF993FAC9, or 0xF993FACA under NumPy shape semantics
#     int32  storage type          0 default, 1 row_sparse, 2 csr
#     shape  storage shape         sparse only
#     shape  shape                 int32 ndim, then ndim int64 sizes
#     int32  device type, int32 device id
#     int32  dtype flag
#     (int32 dtype flag, shape)    per auxiliary array, sparse only
#     values, then each auxiliary array's values
#
# MXNet reads it only by making the array (NDArray.__setstate__, mx.nd.load), and trusts
# it: the checkpoint reader checks it first. And the kernel reads a row_sparse array's rows
# from it on the calling thread (sparse_rows in _kernel.cpp, the layout restated there), where
# its ``indices`` takes an engine operation.

SAVED_MAGICS = {0xF993FAC9: False, 0xF993FACA: True}  # -> saved under NumPy shape semantics
SAVED_STYPES = {0: 'default', 1: 'row_sparse', 2: 'csr'}
SAVED_DEVICES = {1: 'cpu', 2: 'gpu', 3: 'cpu_pinned', 5: 'cpu_shared'}
MAX_NDIM = 32
# The fields of the header after the storage type: a sparse array's storage shape first,
# and its auxiliary arrays (row_sparse: the rows; csr: indptr, indices) last, each a
# dtype flag and a shape.
_HEADER_FIELDS = {
    'default': ('shape', 'device', 'dtype'),
    'row_sparse': ('shape', 'shape', 'device', 'dtype', 'dtype', 'aux shape'),
    'csr': ('shape', 'shape', 'device', 'dtype', 'dtype', 'aux shape', 'dtype', 'aux shape'),
}
_SAVED_DTYPES = {flag: np.dtype(t) for flag, t in _DTYPE_MX_TO_NP.items() if t is not None}
_U32, _I32, _TWO_I32 = struct.Struct('<I'), struct.Struct('<i'), struct.Struct('<ii')
_SIZES = [struct.Struct(f'<{ndim}q') for ndim in range(MAX_NDIM + 1)]


class SavedHeader(NamedTuple):
    """What the header of an array's serialization says (:func:`saved_header`)."""
    np_shape: bool  # saved under NumPy shape semantics
    stype: str
    shapes: list  # a sparse array's storage shape (of its values, as saved), then its shape
    device_type: int  # a key of SAVED_DEVICES
    device_id: int
    dtype: np.dtype
    aux: list  # a sparse array's auxiliary arrays: (dtype, shape) of each
    size: int  # bytes: where the values start

    @property
    def shape(self):
        return self.shapes[-1]

    @property
    def storage_shape(self):
        """A sparse array's, as saved (see :func:`saved_values`); None when dense."""
        return self.shapes[0] if self.aux else None

    @property
    def device(self):
        """``'cpu(0)'``, ..."""
        return f"{SAVED_DEVICES[self.device_type]}({self.device_id})"


def saved_header(raw):
    """The :class:`SavedHeader` at the start of ``raw``, an array's serialization
    (bytes-like); ``ValueError`` saying what in it is not as MXNet 1.x writes it."""
    unpack_i32, sizes, dtypes_of, devices = _I32.unpack_from, _SIZES, _SAVED_DTYPES, SAVED_DEVICES
    try:
        magic, = _U32.unpack_from(raw, 0)
        if magic not in SAVED_MAGICS:
            raise ValueError(f"it starts with {magic:#x}, not an MXNet 1.x array's magic number")
        np_shape = SAVED_MAGICS[magic]
        stype = SAVED_STYPES.get(unpack_i32(raw, 4)[0])
        if stype is None or (np_shape and stype != 'default'):
            raise ValueError("it has an unknown storage type")
        lowest, at, dtypes, shapes, aux = 0 if np_shape else 1, 8, [], [], []
        for field in _HEADER_FIELDS[stype]:
            if field == 'device':  # int32 type, int32 id
                device_type, device_id = _TWO_I32.unpack_from(raw, at)
                if device_type not in devices or device_id < 0:
                    raise ValueError(f"it names the unknown device ({device_type}, {device_id})")
                at += 8
            elif field == 'dtype':  # MXNet's dtype flag
                flag, = unpack_i32(raw, at)
                if flag not in dtypes_of:
                    raise ValueError(f"it has the unknown dtype flag {flag}")
                dtypes.append(dtypes_of[flag])
                at += 4
            else:  # int32 ndim, then ndim int64 sizes
                ndim, = unpack_i32(raw, at)
                if not lowest <= ndim <= MAX_NDIM:
                    raise ValueError(f"it has {ndim} dimensions")
                shape = sizes[ndim].unpack_from(raw, at + 4)
                if shape and min(shape) < 0:
                    raise ValueError(f"it has shape {shape}")
                at += 4 + 8 * ndim
                if field == 'shape':
                    shapes.append(shape)
                else:
                    aux.append((dtypes[-1], shape))
    except struct.error:  # unpack_from past the end
        raise ValueError(f"it ends after {len(raw)} bytes, in the middle of the array") from None
    # tuple.__new__, as SavedHeader._make does, not SavedHeader(...), whose __new__ is a
    # function in Python: the lazy sparse step reads a header per gradient
    return tuple.__new__(SavedHeader, (np_shape, stype, shapes, device_type, device_id,
                                       dtypes[0], aux, at))


def saved_values(raw, header):
    """``(storage shape, values, auxiliary arrays)`` of an array's serialization ``raw``
    whose :func:`saved_header` is ``header``: NumPy views of ``raw``, the storage shape
    that of a sparse array's values (None when dense). ``ValueError`` unless ``raw``
    holds exactly those."""
    storage_shape = header.storage_shape
    if header.aux and _size(storage_shape) == 0:
        storage_shape = _stored_shape(header.stype, header.shape,
                                      [aux_shape for _, aux_shape in header.aux])
    raw = memoryview(raw)
    values, at = _saved_array(raw, header.size, header.dtype,
                              storage_shape if header.aux else header.shape)
    aux = []
    for aux_dtype, aux_shape in header.aux:
        array, at = _saved_array(raw, at, aux_dtype, aux_shape)
        aux.append(array)
    if at != len(raw):
        raise ValueError(f"it has {len(raw) - at} bytes after the array")
    return storage_shape, values, aux


def _saved_array(raw, at, dtype, shape):
    """The values of ``dtype`` and ``shape`` saved at ``at`` in ``raw``, and where they end."""
    end = at + dtype.itemsize * _size(shape)
    if end > len(raw):
        raise ValueError(f"it ends after {len(raw)} bytes, in the middle of the array")
    return np.frombuffer(raw[at:end], dtype.newbyteorder('<')), end


def _size(shape):
    return int(np.prod(shape, dtype=object))


def _stored_shape(stype, shape, aux_shapes):
    """A sparse array's storage shape from its indices, as MXNet's ``NDArray``
    constructor takes it when the saved one is empty: ``NDArray::Save`` writes the
    storage shape before it waits for the array's pending writes, so a state saved
    while its first update still runs records the empty storage it was made with."""
    if stype == 'row_sparse':
        return aux_shapes[0][:1] + shape[1:]
    return aux_shapes[1]


# --- What gluon.Trainer and gluon.Parameter keep to themselves -----------------------------


def in_distributed_trainer(param_dict, indices=None):
    """Is a parameter of ``param_dict`` (index -> ``gluon.Parameter``, an optimizer's;
    only those of ``indices``, if given) driven by a ``gluon.Trainer`` that runs a
    distributed KVStore? The Trainer gives each of its Parameters a reference to itself
    (``_trainer``) and says whether it created a KVStore whose type holds ``'dist'``
    (``_distributed``), neither of them public."""
    found = param_dict.values() if indices is None else (
        param_dict[i] for i in indices if i in param_dict)
    return any(getattr(getattr(param, '_trainer', None), '_distributed', False)
               for param in found)


def trainer_parameters(trainer):
    """The Parameters of ``trainer`` by their index, a list: the order its updates and
    states files number them in (``Trainer`` keeps it, ``_params``, and gives no public
    way to it)."""
    return trainer._params


def parameter_arrays(param):
    """The arrays of ``param`` (a ``gluon.Parameter``), one per device, whatever its
    storage type (``list_data`` refuses a row_sparse one, for which MXNet's own code
    reads ``_check_and_get(_data, list)``)."""
    return param._check_and_get(param._data, list)


def parameter_stype(param):
    """The storage type of the weight of ``param`` (a ``gluon.Parameter``): ``'default'``,
    ``'row_sparse'``, ... (given to its constructor, kept as ``_stype``, not public)."""
    return param._stype


def states_on_servers(trainer):
    """Does ``trainer`` update on a distributed KVStore's servers, which hold the
    optimizer's states (its KVStore has no Updater here)? ``Trainer.load_states`` then
    fails on an ``assert`` of the KVStore's."""
    return bool(trainer._update_on_kvstore) and trainer._kvstore._updater is None
