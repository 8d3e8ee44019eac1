"""Deprecated: the kernel's functions are in :mod:`adam_plugin.kernel`.

This module re-exports them (:func:`variants`, :func:`variant`, :func:`use_variant`) and
warns (``DeprecationWarning``) when it is imported; ``fused`` is the name of ``MyAdam``'s
option for the fast routes, of which the kernel is one.
"""
__all__ = ['variants', 'variant', 'use_variant']

from .. import _warn
from ..kernel import use_variant, variant, variants

_warn.warn("adam_plugin.fused is deprecated: import adam_plugin.kernel, which has the same "
           "functions (variants, variant, use_variant)", DeprecationWarning)
