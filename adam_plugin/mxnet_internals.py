"""Every use of MXNet's private insides, each a small function that says why no public API serves.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

The rest of the package reaches MXNet's private insides only through this module: its
underscore names (but the protected API of ``mx.optimizer.Optimizer`` that MXNet's own
optimizers use: ``_get_lr``, ``_get_wd``, ``_update_count``, ``_index_update_count``,
``_all_index_update_counts``, ``_set_current_context``), its code objects and the frames
that run them. MXNet 1.7.0 to 1.9.1 keep them all alike; ``tests/test_mxnet_internals.py``
exercises each through what the package needs of it, so a release that changes one fails
there first, by name. ``import adam_plugin`` checks the MXNet release first
(:mod:`adam_plugin._mxnet`), before this module is imported.
"""
import sys
import types

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
