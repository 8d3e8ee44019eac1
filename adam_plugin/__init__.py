"""adam_plugin: the Adam optimizer as an MXNet/Gluon plugin.

``import adam_plugin`` registers :class:`MyAdam` with MXNet under the name
``'myadam'``, so ``gluon.Trainer(params, 'myadam', {'learning_rate': 0.1})`` works.
Only the optimizer is imported here: a distributed-KVStore server imports this
package while ``mxnet`` itself is still initialising.
"""
from . import _mxnet  # first: a clear ImportError without a supported MXNet
from .optimizer import MyAdam

__all__ = ['MyAdam']
__version__ = '0.1.0'
