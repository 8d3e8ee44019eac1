"""Read the header of an MXNet array's raw bytes, the ``handle`` its pickle holds.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

``NDArray.__getstate__`` stores ``MXNDArraySaveRawBytes``, MXNet's
``NDArray::Save`` (``src/ndarray/ndarray.cc`` at 1.9.1), little-endian::

    uint32 magic                 0xF993FAC9, or 0xF993FACA under NumPy shape semantics
    int32  storage type          0 default, 1 row_sparse, 2 csr
    shape  storage shape         sparse only
    shape  shape                 int32 ndim, then ndim int64 sizes
    int32  device type, int32 device id
    int32  dtype flag
    (int32 dtype flag, shape)    per auxiliary array, sparse only
    data, then each auxiliary array's data

:func:`parse` checks that the bytes are exactly such an array, with the sizes
adding up to the length and a sparse array's indices in range, so that
MXNet's own parser (``__setstate__``) only ever sees well-formed input.
"""
from typing import NamedTuple

import numpy
from mxnet.ndarray.ndarray import _DTYPE_MX_TO_NP

MAGICS = {0xF993FAC9: False, 0xF993FACA: True}  # magic -> saved under NumPy shape semantics
STYPES = {0: 'default', 1: 'row_sparse', 2: 'csr'}
AUX_ARRAYS = {'default': 0, 'row_sparse': 1, 'csr': 2}
DEVICES = {1: 'cpu', 2: 'gpu', 3: 'cpu_pinned', 5: 'cpu_shared'}
MAX_NDIM = 32


class Header(NamedTuple):
    """What an array's raw bytes say about it, its numbers left out."""
    stype: str
    shape: tuple
    dtype: str
    device: str
    np_shape: bool


class _Reader:
    def __init__(self, raw):
        self.raw, self.at = memoryview(raw), 0

    def take(self, count):
        if count > len(self.raw) - self.at:
            raise ValueError(f"it ends after {len(self.raw)} bytes, in the middle of the array")
        self.at += count
        return self.raw[self.at - count:self.at]

    def int(self, fmt='<i4'):
        return int(numpy.frombuffer(self.take(numpy.dtype(fmt).itemsize), fmt)[0])

    def shape(self, np_shape):
        ndim = self.int()
        if not (0 if np_shape else 1) <= ndim <= MAX_NDIM:
            raise ValueError(f"it has {ndim} dimensions")
        shape = tuple(int(n) for n in numpy.frombuffer(self.take(8 * ndim), '<i8'))
        if any(n < 0 for n in shape):
            raise ValueError(f"it has shape {shape}")
        return shape

    def array(self, dtype, shape):
        return numpy.frombuffer(self.take(dtype.itemsize * _size(shape)), dtype.newbyteorder('<'))


def _size(shape):
    return int(numpy.prod(shape, dtype=object))


def _dtype(flag):
    if flag not in _DTYPE_MX_TO_NP or _DTYPE_MX_TO_NP[flag] is None:
        raise ValueError(f"it has the unknown dtype flag {flag}")
    return numpy.dtype(_DTYPE_MX_TO_NP[flag])


def parse(raw):
    """The :class:`Header` of an array's raw bytes.

    Parameters
    ----------
    raw : bytes-like

    Raises
    ------
    ValueError
        If ``raw`` is not exactly one array as MXNet 1.9.1 saves it.
    """
    read = _Reader(raw)
    magic = read.int('<u4')
    if magic not in MAGICS:
        raise ValueError(f"it starts with {magic:#x}, not an MXNet 1.x array's magic number")
    np_shape = MAGICS[magic]
    stype = STYPES.get(read.int())
    if stype is None or (np_shape and stype != 'default'):
        raise ValueError("it has an unknown storage type")
    aux_count = AUX_ARRAYS[stype]
    storage_shape = read.shape(np_shape) if aux_count else None
    shape = read.shape(np_shape)
    device_type, device_id = read.int(), read.int()
    if device_type not in DEVICES or device_id < 0:
        raise ValueError(f"it names the unknown device ({device_type}, {device_id})")
    dtype = _dtype(read.int())
    aux = [(_dtype(read.int()), read.shape(np_shape)) for _ in range(aux_count)]
    if aux_count and _size(storage_shape) == 0:
        storage_shape = _stored_shape(stype, shape, [aux_shape for _, aux_shape in aux])
    read.array(dtype, storage_shape if aux_count else shape)
    aux = [read.array(aux_dtype, aux_shape) for aux_dtype, aux_shape in aux]
    if read.at != len(read.raw):
        raise ValueError(f"it has {len(read.raw) - read.at} bytes after the array")
    if stype == 'row_sparse':
        _check_row_sparse(shape, storage_shape, *aux)
    elif stype == 'csr':
        _check_csr(shape, storage_shape, *aux)
    return Header(stype, shape, dtype.name, f"{DEVICES[device_type]}({device_id})", np_shape)


def _stored_shape(stype, shape, aux_shapes):
    """A sparse array's storage shape from its indices, as MXNet's ``NDArray``
    constructor takes it when the saved one is empty: ``NDArray::Save`` writes the
    storage shape before it waits for the array's pending writes, so a state saved
    while its first update still runs records the empty storage it was made with."""
    if stype == 'row_sparse':
        return aux_shapes[0][:1] + shape[1:]
    return aux_shapes[1]


def _check_row_sparse(shape, storage_shape, rows):
    if storage_shape[1:] != shape[1:] or rows.shape != storage_shape[:1] or not (
            rows.dtype.kind == 'i' and numpy.all(numpy.diff(rows) > 0)
            and (rows.size == 0 or 0 <= rows[0] and rows[-1] < shape[0])):
        raise ValueError("its row_sparse rows do not fit its shape")


def _check_csr(shape, storage_shape, indptr, indices):
    if not (len(shape) == 2 and len(storage_shape) == 1
            and indptr.shape == (shape[0] + 1,) and indices.shape == storage_shape
            and indptr.dtype.kind == indices.dtype.kind == 'i'
            and indptr[0] == 0 and indptr[-1] == indices.size
            and numpy.all(numpy.diff(indptr) >= 0)
            and numpy.all((0 <= indices) & (indices < shape[1]))):
        raise ValueError("its csr indices do not fit its shape")
