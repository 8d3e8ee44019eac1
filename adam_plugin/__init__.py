"""adam_plugin: the Adam optimizer as an MXNet/Gluon plugin.

``import adam_plugin`` registers :class:`MyAdam` with MXNet under the name
``'myadam'``, so ``gluon.Trainer(params, 'myadam', {'learning_rate': 0.1})`` works,
and :class:`MyYogi` (``MyAdam(yogi=True)`` with d2l's ``epsilon=1e-3``) as ``'myyogi'``.
Only the optimizer is imported here: a distributed-KVStore server imports this
package while ``mxnet`` itself is still initialising.

The public API: :class:`MyAdam` and :class:`MyYogi` (here), :mod:`adam_plugin.checkpoint`,
:func:`adam_plugin.distributed.exit_on_uncaught_exception`, the kernel's variant
functions in :mod:`adam_plugin.kernel`, the rule in :mod:`adam_plugin.textbook`, the
chapter's code (:mod:`adam_plugin.chapter`) and :mod:`adam_plugin.scaleout.launch`;
each module's ``__all__`` lists its public names. Modules whose docstring says
"Internal" (``dispatch``, ``deferred``, ``checkpoint.safe``, ...) may change at any time.
"""
# First: its check makes a clear ImportError without a supported MXNet.
from . import _mxnet  # noqa: F401  (imported for that check only)
from .optimizer import MyAdam, MyYogi

__all__ = ['MyAdam', 'MyYogi']
__version__ = '0.1.0'
