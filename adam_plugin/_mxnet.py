"""Internal: the MXNet check that ``import adam_plugin`` runs first.

The package declares no ``mxnet`` dependency: MXNet ships as many distributions of
one import package (``mxnet``, ``mxnet-cu112``, ``mxnet-mkl``, ...), and pip would
install the CPU ``mxnet`` over a GPU build. So the check is made here, at import.
The version is read from ``mxnet.libinfo``, a submodule that is set before anything
else, also in a distributed-KVStore server's half-initialised ``import mxnet``.
"""
import re

# The releases the tests pass on (`make matrix`: 1.7.0.post2, 1.8.0.post0, 1.9.1). 1.6.0 keeps
# mxnet.kvstore in one module, not the package deferred.py imports from; MXNet 2 changed the
# optimizer API.
OLDEST = (1, 7, 0)
BEFORE = (2,)

PROVIDERS = ('mxnet (CPU), mxnet-cu102 ... mxnet-cu117 (CUDA builds), mxnet-mkl, '
             'mxnet-native, or an MXNet built from source')


def require(version):
    """Raise ``ImportError`` unless ``version`` (MXNet's ``"1.9.1"``) is a supported release."""
    numbers = tuple(int(n) for n in re.findall(r'\d+', version)[:3])
    if not OLDEST <= numbers < BEFORE:
        needed = f">={'.'.join(map(str, OLDEST))},<{BEFORE[0]}"
        raise ImportError(
            f"adam_plugin needs MXNet {needed} but found MXNet {version}. Install a "
            f"supported build of your choice, e.g. pip install 'mxnet{needed}' (CPU) or "
            f"'mxnet-cu112{needed}' (CUDA 11.2).")


try:
    from mxnet import libinfo
except ModuleNotFoundError as error:
    if error.name != 'mxnet':  # MXNet is there but lacks something: its own error says what
        raise
    raise ImportError(
        f"adam_plugin needs MXNet 1.x, and no module named 'mxnet' was found. It is "
        f"provided by one of the distributions {PROVIDERS}; install the one for your "
        f"hardware first, e.g. pip install mxnet==1.9.1 (CPU) or "
        f"pip install mxnet-cu112 (CUDA 11.2).", name='mxnet') from None

require(libinfo.__version__)
