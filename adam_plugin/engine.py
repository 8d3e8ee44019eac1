"""The updates of MyAdam queued in MXNet's engine: :class:`EngineQueue`.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

Inside the KVStore's updater callback, which runs one parameter at a time
(``update_on_kvstore=True``), under ``nonfinite='skip'``, an update is queued in MXNet's
engine (:meth:`adam_plugin.kernel.HandleTable.queue`) rather than run before the call
returns: there MXNet queues its own ``adam_update`` and returns, and waiting for the
engine on each call would cost a handoff between threads per parameter. What a queued
step finds (a gradient not finite: the step was skipped; a second moment that
overflowed) is taken in, warned about and counted in ``num_skipped`` by the next
``Trainer.step`` (which sets ``rescale_grad``) or save, which waits for it; by the
KVStore's next call for the same parameter, and by every call under an ``lr_scheduler``
(see :meth:`EngineQueue.queue`). Not under ``nonfinite='raise'``, whose
error comes out of the call that failed, before anything else changes; not on a
distributed KVStore's server, which has no later call to raise from.
"""
from . import distributed, kernel, mxnet_internals


class EngineQueue:
    """The updates of ``optimizer`` queued in MXNet's engine (see the module's docstring).

    Parameters
    ----------
    optimizer : MyAdam
        Whose ``nonfinite`` and ``param_dict`` say what may be queued.
    counts : adam_plugin.counts.StepCounts
    values : adam_plugin.step_values.StepValues
    bad : adam_plugin.counts.BadUpdates
        The optimizer's, which a queued update counts, reads and reports in as an update
        on the calling thread does.

    Attributes
    ----------
    plans : dict
        Parameter index -> ``(state, multi_precision, dispatch.Batch)``: see :meth:`queue`.
    queued : dict
        Parameter index -> ``(Step, step count, counts, kernel.Queued)``, in the order
        queued, until taken in.
    """

    def __init__(self, optimizer, counts, values, bad):
        self.optimizer, self.counts, self.values, self.bad = optimizer, counts, values, bad
        self.plans, self.queued = {}, {}
        # Read once (each read of an unset variable raises and catches a KeyError): a
        # server's optimizer is made there, unpickled from the worker's
        # (MyAdam._start_run makes this).
        self.on_server = distributed.on_server()

    def queues(self, caller=None):
        """Is the update of ``caller`` (a frame up the stack; by default this method's)
        queued in MXNet's engine rather than run before it returns (see the module's
        docstring)? ``MyAdam`` hands the frame that called its update method: the search
        for the KVStore's callback then starts above the package's own frames, which
        Python would otherwise make an object of, each, on demand."""
        return (self.optimizer.nonfinite == 'skip' and not self.on_server
                and mxnet_internals.in_kvstore_callback(caller))

    def plan(self, index, state, multi_precision, batch, caller=None):
        """The update of ``index`` runs on the calling thread, its arrays those of ``batch``
        (an :class:`adam_plugin.dispatch.Batch`): plan to queue its later ones (see
        :meth:`queue`) if the batch can be queued and :meth:`queues` (for ``caller``), and
        the gradient is the KVStore's merge buffer."""
        if batch.queueable and self.queues(caller) and self._merged_by_the_kvstore(index):
            self.plans[index] = state, multi_precision, batch

    def _merged_by_the_kvstore(self, index):
        """Is the gradient the KVStore hands for ``index`` its own merge buffer, the same
        array at every call (a Trainer's parameter on several devices)? On one device it
        is the array pushed: a Parameter's gradient, which Gluon replaces when
        ``grad_req`` is set again, or whatever ``kv.push`` was given."""
        param = self.optimizer.param_dict.get(index)
        return param is not None and len(param.list_ctx()) > 1

    def queue(self, index, weight, grad, state, multi_precision, caller=None):
        """Queue the update of one parameter in MXNet's engine, where :meth:`queues`,
        through the plan its first such call made (its state, multi_precision and
        :class:`adam_plugin.dispatch.Batch`), which the KVStore's later calls reuse with
        their new weight and gradient: True when queued. False, nothing done, when there
        is no plan for these states or the kernel finds an array it does not take (the
        plan is then dropped): the caller's checks and dispatch decide. ``caller``: see
        :meth:`queues`.

        The first call runs on the calling thread, waiting for the engine: the queued
        step's data pointers are read here (``MXNDArrayGetData``), and MXNet allocates a
        new array's memory at its first use, unguarded (``Chunk::CheckAndAlloc``). The
        KVStore's merge buffer, its copy of the weight and the states from
        ``MyAdam.create_state`` all start unallocated, their first writer queued just
        before this call; read here while that writer allocates them on an engine thread,
        an array gets two allocations, and the step reads memory the reduce never wrote (a
        gradient of garbage). Once the first step has waited for them, they are
        allocated, and the KVStore hands the same arrays for the key at every later call:
        planned only where the gradient is its merge buffer (:meth:`_merged_by_the_kvstore`)."""
        plan = self.plans.get(index)
        if (plan is None or plan[0] is not state or plan[1] != multi_precision
                or not self.queues(caller)):
            return False
        if index in self.queued or self.optimizer.lr_scheduler is not None:
            # its update queued before (a key pushed twice), whose count this one follows;
            # or a count given back by a skip, which the rate of lr_scheduler may read
            self.take_all()
        batch = plan[2]
        rule = self.values.rule(batch)
        count = batch.step_counts[0]
        counts = self.counts.snapshot((index,), (count,))
        try:
            t = self.counts.advance(index, count)
            num_update = self.optimizer.num_update
            step = self.values.step(index, t, self.values.base_lr(num_update), rule,
                                    batch.dtypes[0], num_update)
            queued = batch.queue(step, weight, grad)
        except BaseException:
            self.counts.restore(counts)
            raise
        if queued is None:
            self.counts.restore(counts)
            del self.plans[index]
            return False
        if count is not None:  # until taken in: see QueuedCount
            count[0] = QueuedCount(t, queued)
        self.queued[index] = step, count, counts, queued
        return True

    def take_all(self):
        """Take in the results of the updates queued in MXNet's engine (see
        :meth:`queues`), in the order queued, waiting for them to run. When every one
        has run and found nothing (the usual case), one call into the kernel says so."""
        queued = self.queued
        if queued and kernel.queued_status([entry[3] for entry in queued.values()]) == 1:
            for step, count, _, _ in queued.values():
                if count is not None:
                    count[0] = step.t  # an int again (see QueuedCount)
            self.bad.good(queued)
            queued.clear()
        while queued:
            self._take(next(iter(queued)))

    def _take(self, index):
        """Take in the result of the update of ``index`` queued in MXNet's engine, waiting
        for it to run, as an update on the calling thread would have: a gradient that was
        not finite gives the step count back and counts as skipped (``max_skips``), an
        overflow counts too."""
        step, count, counts, queued = self.queued.pop(index)
        if count is not None:
            count[0] = step.t  # an int again (see QueuedCount); given back below if skipped
        try:
            finite, overflow = queued.result()
        except BaseException:
            self.counts.restore(counts)
            raise
        if not finite:
            self.counts.restore(counts)
        self.bad.refuse_bad_gradients((index,), (finite,))
        self.bad.count_skips((index,), (finite,))
        self.bad.check_overflows((index,), (step if finite else None,), (overflow,))


class QueuedCount(int):
    """A step count while its update is queued in MXNet's engine (:meth:`EngineQueue.queue`):
    the count the update gives, until :meth:`EngineQueue.take_all` puts in the count it
    ends with (one less when the gradient was not finite and the update was skipped). Pickled
    before that (``Trainer.save_states`` pickles the Updater's states before the
    optimizer, whose ``__getstate__`` takes the queued updates in), it waits for the
    update and is saved as the count it ends with, an ``int``."""

    def __new__(cls, t, queued):
        count = super().__new__(cls, t)
        count.queued = queued
        return count

    def __reduce_ex__(self, protocol):
        finite, _ = self.queued.result()
        return int, (int(self) if finite else int(self) - 1,)
