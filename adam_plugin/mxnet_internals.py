"""Every use of MXNet's private insides, each a small function that says why no public API serves.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

The rest of the package reaches MXNet's private insides only through this module: its
underscore names (but the protected API of ``mx.optimizer.Optimizer`` that MXNet's own
optimizers use: ``_get_lr``, ``_get_wd``, ``_update_count``, ``_index_update_count``,
``_all_index_update_counts``, ``_set_current_context``), its code objects and the frames
that run them, its C API (the functions the kernel calls too) and C structs. MXNet 1.7.0 to 1.9.1 keep them all alike; ``tests/test_mxnet_internals.py``
exercises each through what the package needs of it, so a release that changes one fails
there first, by name. ``import adam_plugin`` checks the MXNet release first
(:mod:`adam_plugin._mxnet`), before this module is imported.
"""
import ctypes
import struct
import sys
import types

import numpy as np
from mxnet.base import _LIB, check_call
from mxnet.kvstore import KVStore
from mxnet.kvstore import kvstore as _kvstore

# --- The KVStore's updater callback -------------------------------------------------------
#
# With update_on_kvstore=True the KVStore runs the optimizer from C through a ctypes
# callback, updater_handle in mxnet/kvstore/kvstore.py; MXNet tells no one whether a call
# comes from there, and ctypes drops what the callback raises. Its code object is the
# one sign (see adam_plugin.deferred).


def _callback_code():
    """The code object of the KVStore's ctypes callback, ``updater_handle``."""
    for const in _kvstore._updater_wrapper.__code__.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == 'updater_handle':
            return const
    raise ImportError("adam_plugin: mxnet.kvstore.kvstore._updater_wrapper has no "
                      "updater_handle; this MXNet version is not supported")


CALLBACK_CODE = _callback_code()


def in_kvstore_callback(frame=None):
    """Whether ``frame`` (by default the caller's) runs inside the KVStore's updater callback."""
    return called_from(sys._getframe(1) if frame is None else frame, CALLBACK_CODE)


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
    the Updater a KVStore makes for itself (``KVStore.set_optimizer``)?"""
    return called_from(sys._getframe(2), _KVSTORE_SET_OPTIMIZER, depth=3)


# --- MXNet's C API --------------------------------------------------------------------------
#
# The kernel (adam_plugin.kernel) reads and writes MXNet's arrays in place and queues its
# step in MXNet's engine, which only the C API offers.

# The functions of MXNet's C API the kernel calls (handed over by ``use_mxnet``, in this order).
KERNEL_FUNCTIONS = ('MXNDArrayGetData', 'MXNDArrayWaitToRead', 'MXNDArrayWaitAll',
                    'MXEnginePushSyncND', 'MXNDArrayGetShapeEx64', 'MXNDArrayGetDType',
                    'MXNDArrayGetStorageType', 'MXNDArrayGetContext')


def kernel_functions():
    """The addresses of :data:`KERNEL_FUNCTIONS` in MXNet's library, for the kernel's
    ``use_mxnet``."""
    return [ctypes.cast(getattr(_LIB, name), ctypes.c_void_p) for name in KERNEL_FUNCTIONS]


def check(status):
    """Raise MXNet's last error as MXNet raises it (``MXNetError``) unless ``status``, what
    a call of MXNet's C API (or of the kernel, which passes on theirs) returned, is 0."""
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
    """The rows a ``row_sparse`` ``array`` stores, without copying anything.

    Python's ``indices`` is a copy (800 KB for 100K rows, about 80 us); MXNet's DLPack
    view of the array describes its stored values (``data()``), whose first dimension
    this is. Pending writes to the array, which may store other rows, are waited for.
    """
    array.wait_to_read()
    view = ctypes.c_void_p()
    check(_LIB.MXNDArrayToDLPack(array.handle, ctypes.byref(view)))
    try:
        return _DLManagedTensor.from_address(view.value).dl_tensor.shape[0]  # (cast: 4 us)
    finally:
        check(_LIB.MXNDArrayCallDLPackDeleter(view))


# What MXNDArraySaveRawBytes writes first (NDArray::Save in MXNet 1.x, the format of
# mx.nd.save): the magic number of format 2, then the storage type (kRowSparseStorage).
_SAVED_ROW_SPARSE = struct.pack('<Ii', 0xF993FAC9, 1)
_INT64 = 6  # mshadow's type flag
_SAVED_HEADER_MAX = 400  # bytes: the header up to the indices' count, for up to 22 dimensions


def row_indices(array):
    """The indices of the rows a ``row_sparse`` ``array`` on the host stores, as a NumPy
    int64 array, once the pending writes to it are done.

    Python's ``array.indices`` is a copy made by an engine operation, which the calling
    thread then waits for: a handoff between threads even when the array is ready
    (about 50 us of a 0.3 ms embedding step). MXNet's serialization of the array
    (``MXNDArraySaveRawBytes``, the format ``mx.nd.save`` writes) reads it on the
    calling thread, and writes the indices last: magic number, storage type, storage
    shape, shape, context, dtype, the indices' dtype and shape, the values, the indices.
    It reads the storage shape before waiting for the array's writes, so they are waited
    for first, and the count is the indices' own shape. Where that is not what MXNet
    writes (NumPy shape semantics refuse a sparse array; indices that are not int64),
    the rows come from ``array.indices``.
    """
    array.wait_to_read()
    size, buffer = ctypes.c_size_t(), ctypes.c_void_p()
    if _LIB.MXNDArraySaveRawBytes(array.handle, ctypes.byref(size), ctypes.byref(buffer)) == 0:
        # The header alone is copied, and the indices: a ctypes view of the whole buffer
        # made an array type per size (each step's gradient has a new one), 9 us a call.
        header = ctypes.string_at(buffer.value, min(size.value, _SAVED_HEADER_MAX))
        at = 8
        for _ in range(2):  # the storage shape, the shape: ndim, then ndim int64
            ndim = struct.unpack_from('<i', header, at)[0] if at + 4 <= len(header) else -1
            at += 4 + 8 * max(ndim, 0)
        at += 8 + 4  # the context, the values' dtype
        if header[:8] == _SAVED_ROW_SPARSE and at + 16 <= len(header):
            index_type, ndim, count = struct.unpack_from('<iiq', header, at)
            if index_type == _INT64 and ndim == 1 and 0 <= 8 * count <= size.value - at - 16:
                rows = np.empty(count, np.int64)
                ctypes.memmove(rows.ctypes.data, buffer.value + size.value - 8 * count,
                               8 * count)
                return rows
    return array.indices.asnumpy().astype(np.int64, copy=False)


