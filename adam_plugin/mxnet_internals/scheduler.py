"""What a distributed KVStore's scheduler runs, without MXNet's Python package: :data:`SCHEDULER_CODE`.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

Part of :mod:`adam_plugin.mxnet_internals`, alone in this file because it imports nothing
but the standard library: :mod:`adam_plugin.scaleout.launch` loads it alone, also when it
runs as a script, without the package (which imports MXNet).
"""

#: What a scheduler runs, as ``python -c SCHEDULER_CODE`` (see
#: :mod:`adam_plugin.scaleout.launch`): what ``import mxnet`` does in a scheduler, as
#: ``mxnet.kvstore.kvstore_server`` does it, without importing the package (about 2 s of
#: CPU; a scheduler never runs Python code of MXNet's): MXNet's C library, found by
#: MXNet's own ``libinfo.py`` loaded alone (the package has no other way to find it),
#: creates a 'dist' KVStore and runs it through the C API. A scheduler never calls the
#: controller.
SCHEDULER_CODE = """\
import ctypes, importlib.util, os, sys
libinfo_py = os.path.join(os.path.dirname(importlib.util.find_spec('mxnet').origin), 'libinfo.py')
spec = importlib.util.spec_from_file_location('mxnet_libinfo', libinfo_py)
libinfo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(libinfo)
lib = ctypes.CDLL(libinfo.find_lib_path()[0], ctypes.RTLD_LOCAL)
lib.MXGetLastError.restype = ctypes.c_char_p
kvstore = ctypes.c_void_p()
controller = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(
    lambda head, body, handle: None)
if lib.MXKVStoreCreate(b'dist', ctypes.byref(kvstore)) or lib.MXKVStoreRunServer(
        kvstore, controller, None):
    sys.exit('adam_plugin.scaleout.launch: the scheduler failed: '
             + lib.MXGetLastError().decode('utf-8', 'replace'))
"""
