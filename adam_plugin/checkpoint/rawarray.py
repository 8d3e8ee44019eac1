"""Check an MXNet array's raw bytes, the ``handle`` its pickle holds, before MXNet parses them.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

``NDArray.__getstate__`` stores ``MXNDArraySaveRawBytes``, MXNet's ``NDArray::Save``
(read by :func:`adam_plugin.mxnet_internals.saved_header`, which says what it holds).
:func:`parse` checks that the bytes are exactly such an array, with the sizes adding up
to the length and a sparse array's indices in range, so that MXNet's own parser
(``__setstate__``) only ever sees well-formed input.
"""
from typing import NamedTuple

import numpy

from .. import mxnet_internals


class Header(NamedTuple):
    """What an array's raw bytes say about it, its numbers left out."""
    stype: str
    shape: tuple
    dtype: str
    device: str
    np_shape: bool


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
    header = mxnet_internals.saved_header(raw)
    storage_shape, _, aux = mxnet_internals.saved_values(raw, header)
    if header.stype == 'row_sparse':
        _check_row_sparse(header.shape, storage_shape, *aux)
    elif header.stype == 'csr':
        _check_csr(header.shape, storage_shape, *aux)
    return Header(header.stype, header.shape, header.dtype.name, header.device, header.np_shape)


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
