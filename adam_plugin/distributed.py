"""MyAdam in a distributed-KVStore job: the update runs on the servers, never on workers.

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
MyAdam refuses to update on a worker: :func:`refuse_worker_update` raises.
"""
import os


def refuse_worker_update():
    """Raise ``RuntimeError`` if this process is a worker of a distributed-KVStore job.

    ps-lite decides the role from ``DMLC_ROLE``; on a worker MyAdam is only asked to
    update when the Trainer has ``update_on_kvstore=False``. Called before the
    optimizer touches any weight, state or step count.

    Raises
    ------
    RuntimeError
        If ``DMLC_ROLE`` is ``'worker'``; the message names ``update_on_kvstore``.
    """
    if os.environ.get('DMLC_ROLE') == 'worker':
        raise RuntimeError(
            "myadam: refusing to update on a distributed-KVStore worker: with "
            "update_on_kvstore=False every worker updates its own copy of the weights, and "
            "MXNet 1.9.1's dist_sync let them diverge silently (the first step's weight "
            "broadcast and gradient all-reduce race on the same keys). Create the Trainer "
            "with update_on_kvstore=True (the default for dist kvstores): the servers then "
            "run the update once for all workers. No weight, state or step count was changed.")
