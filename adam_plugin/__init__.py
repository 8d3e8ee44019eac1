"""adam_plugin: the Adam optimizer as an MXNet/Gluon plugin.

``import adam_plugin`` registers :class:`MyAdam` with MXNet under the name
``'myadam'``, so ``gluon.Trainer(params, 'myadam', {'learning_rate': 0.1})`` works,
and :class:`MyYogi` (``MyAdam(yogi=True)`` with d2l's ``epsilon=1e-3``) as ``'myyogi'``.
Only the optimizer is imported here: a distributed-KVStore server imports this
package while ``mxnet`` itself is still initialising.
"""
from .optimizer import MyAdam, MyYogi

__all__ = ['MyAdam', 'MyYogi']
__version__ = '0.1.0'
