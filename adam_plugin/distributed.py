"""MyAdam in a distributed-KVStore job: the update runs on the servers, and a failing worker exits.

Public: :func:`exit_on_uncaught_exception`; the rest is internal (MyAdam calls it).

With a ``dist`` KVStore, ``gluon.Trainer(..., update_on_kvstore=True)`` (MXNet's
default there) pickles the optimizer to the servers, which run every update
once; the workers only push gradients and pull weights, and end bitwise equal.

``update_on_kvstore=False`` makes every worker update its own copy instead. On
MXNet 1.9.1 that was not exact here: in 3 of 6 ``dist_sync`` runs with two workers
and the built-in ``sgd`` (1 of 3 with ``myadam``) the workers ended with different
weights, or with equal but wrong ones. The first ``Trainer.step``
broadcasts the initial weights and all-reduces the gradients through the same
keys without ordering the two, so a worker can pull the summed gradient as its
initial weight (initialising the KVStore before the first backward pass made
the runs agree, but that needs Trainer internals). Rather than diverge silently,
MyAdam refuses to update on a worker: ``refuse_worker_update`` raises.

A worker whose script raises does not end by itself: at interpreter exit
ps-lite's finalisation waits for the other workers, which wait for it in a
push or pull, and the job hangs. So once MyAdam knows it runs in a
distributed-KVStore worker, :func:`exit_on_uncaught_exception` makes an uncaught
exception end the process at once (the launcher installs it earlier still).

"Runs in a distributed-KVStore worker" is decided by the ``gluon.Trainer`` that
drives the optimizer, whether it created a KVStore whose type holds ``'dist'``
(``mxnet_internals.in_distributed_trainer``). A
``DMLC_ROLE=worker`` left in the environment, a Horovod rank
(``hvd.DistributedTrainer`` has no KVStore) and a local Trainer do not count.
"""
__all__ = ['exit_on_uncaught_exception']

import os
import sys


def on_server():
    """Does this process run a distributed KVStore's server (``DMLC_ROLE=server``, set in
    its environment from its start)? Its KVStore runs the optimizer's updates, with no
    Trainer to raise from nor a later call to take in what a queued step found."""
    return os.environ.get('DMLC_ROLE') == 'server'


def watch_worker(distributed):
    """Call :func:`exit_on_uncaught_exception` if ``distributed``: the optimizer's Trainer
    runs a distributed KVStore (:func:`adam_plugin.mxnet_internals.in_distributed_trainer`).

    MyAdam calls this when it is pickled: a distributed Trainer pickles it to send
    it to the servers, at its first ``step``.
    """
    if distributed:
        exit_on_uncaught_exception()


def refuse_worker_update(distributed):
    """Raise ``RuntimeError`` if ``distributed``: a distributed-KVStore worker asks the
    optimizer to update (its Trainer runs a distributed KVStore).

    On a worker MyAdam is only asked to update when the Trainer has
    ``update_on_kvstore=False``. Called before the optimizer touches any weight,
    state or step count. The uncaught refusal ends the process (see
    :func:`exit_on_uncaught_exception`).

    Raises
    ------
    RuntimeError
        If ``distributed``; the message names ``update_on_kvstore``.
    """
    if distributed:
        exit_on_uncaught_exception()
        raise RuntimeError(
            "myadam: refusing to update on a distributed-KVStore worker: with "
            "update_on_kvstore=False every worker updates its own copy of the weights, and "
            "MXNet 1.9.1's dist_sync let them diverge silently (the first step's weight "
            "broadcast and gradient all-reduce race on the same keys). Create the Trainer "
            "with update_on_kvstore=True (the default for dist kvstores): the servers then "
            "run the update once for all workers. No weight, state or step count was changed.")


def exit_on_uncaught_exception():
    """Make an uncaught exception end this process at once with status 1.

    The installed ``sys.excepthook`` flushes ``sys.stdout``, reports the
    exception through the hook it replaces (by default the usual traceback on
    stderr), flushes ``sys.stderr`` and calls ``os._exit(1)``: interpreter
    shutdown, where ps-lite would wait for the other workers, is skipped, and so
    are ``atexit`` handlers and the flushing of other open files. Exceptions
    caught by the script, ``sys.exit`` and exceptions in other threads are not
    affected.

    ``python -m adam_plugin.scaleout.launch`` installs it in every Python worker
    before the script's first line (loading this file alone, without the package).
    MyAdam calls it itself in a distributed-KVStore worker: when the Trainer
    sends it to the servers (``watch_worker``) and when it refuses
    ``update_on_kvstore=False``. Started otherwise, call it yourself right after
    ``mx.kv.create('dist_sync')`` if your script can fail before its first step.
    Installing it twice is the same as once. This module imports nothing but the
    standard library, which the launcher's loading relies on.
    """
    if getattr(sys.excepthook, 'adam_plugin_exits', False):
        return
    report = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            sys.stdout.flush()
            report(exc_type, exc, tb)
            sys.stderr.flush()
        finally:
            os._exit(1)

    hook.adam_plugin_exits = True
    sys.excepthook = hook
