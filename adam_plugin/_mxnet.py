"""Internal: the MXNet check that ``import adam_plugin`` runs first.

The package declares no ``mxnet`` dependency: MXNet ships as many distributions of
one import package (``mxnet``, ``mxnet-cu112``, ``mxnet-mkl``, ...), and pip would
install the CPU ``mxnet`` over a GPU build. So the check is made here, at import.
The version is read from ``mxnet.libinfo``, a submodule that is set before anything
else, also in a distributed-KVStore server's half-initialised ``import mxnet``.
Every MXNet 1.x release uses ``np.bool``, which NumPy 1.24 removed: under a newer
NumPy, ``import mxnet`` raises ``AttributeError``, and the check says which NumPy
to install instead.
"""
import re

# The releases the tests pass on (`make matrix`: 1.7.0.post2, 1.8.0.post0, 1.9.1). 1.6.0 keeps
# mxnet.kvstore in one module, not the package deferred.py imports from; MXNet 2 changed the
# optimizer API.
OLDEST = (1, 7, 0)
BEFORE = (2,)

PROVIDERS = ('mxnet (CPU), mxnet-cu102 ... mxnet-cu117 (CUDA builds), mxnet-mkl, '
             'mxnet-native, or an MXNet built from source')

# The first NumPy release without np.bool, and the requirement that keeps below it (as
# pyproject.toml's).
NUMPY_WITHOUT_BOOL = (1, 24)
NUMPY_NEEDED = f"numpy<{'.'.join(map(str, NUMPY_WITHOUT_BOOL))}"


def release(version):
    """``"1.9.1"`` -> ``(1, 9, 1)``: the first three numbers of a version string."""
    return tuple(int(n) for n in re.findall(r'\d+', version)[:3])


def require(version):
    """Raise ``ImportError`` unless ``version`` (MXNet's ``"1.9.1"``) is a supported release."""
    if not OLDEST <= release(version) < BEFORE:
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
        f"hardware first, with a NumPy it can use, e.g. pip install mxnet==1.9.1 "
        f"'{NUMPY_NEEDED}' (CPU) or pip install mxnet-cu112 '{NUMPY_NEEDED}' (CUDA 11.2).",
        name='mxnet') from None
except AttributeError as error:
    import numpy
    if release(numpy.__version__) < NUMPY_WITHOUT_BOOL:  # not NumPy's doing
        raise
    raise ImportError(
        f"adam_plugin needs MXNet 1.x, which cannot be imported with NumPy "
        f"{numpy.__version__}: every MXNet 1.x release uses np.bool, which NumPy 1.24 "
        f"removed. Install a NumPy it can use: pip install '{NUMPY_NEEDED}'.",
        name='mxnet') from error

require(libinfo.__version__)
