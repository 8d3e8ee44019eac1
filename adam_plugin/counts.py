"""The bookkeeping of MyAdam's updates: each parameter's step count, and its bad updates.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

:class:`StepCounts` counts each parameter's updates, in its state's step count ``t`` and
in MXNet's counts, which follow it, and puts them back when an update is refused.
:class:`BadUpdates` counts the updates skipped under ``nonfinite='skip'`` (a gradient that
is not finite) and the steps that overflowed (``num_skipped``), warns about them, and
raises at ``max_skips`` of a parameter in a row, or at once under ``nonfinite='raise'``.
"""
from . import _warn
from .kernel import V_OVERFLOW, W_OVERFLOW

# Under nonfinite='skip', a parameter's bad updates in a row (a NaN or Inf gradient, or a
# second moment that overflowed) are warned about at the first and then at every
# WARN_EVERY-th, each warning with its counts (so Python's once-per-line filter shows
# them all); at max_skips in a row, FloatingPointError.
WARN_EVERY = 10

# What a step found it had written (adam_plugin.kernel's flags) -> what is said of it.
_OVERFLOWS = {
    V_OVERFLOW: "the second moment of {name} overflowed to Inf although the gradient was "
                "finite (its elements with v = Inf no longer move)",
    W_OVERFLOW: "the weight of {name} holds Inf or NaN after the update although the gradient "
                "was finite (a float16 weight stepped past 65504, lr times the update beyond "
                "its dtype's range, or a weight not finite before)",
}


class StepCounts:
    """The step counts of ``optimizer``'s parameters (MyAdam's): each in the parameter's
    state, a one-item list ``[t]``, and MXNet's for the current device
    (``_index_update_count``) and ``num_update``, which follow it.

    Attributes
    ----------
    saved : dict
        Parameter index -> its step count in the states file the optimizer was loaded
        from (see :meth:`load` and :meth:`advance`).
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.saved = {}

    def load(self, all_index_update_counts):
        """Keep the counts of a states file (the optimizer's ``_all_index_update_counts``,
        device -> index -> count) for :meth:`advance`: of each index, its lowest-numbered
        device's."""
        for device in sorted(all_index_update_counts, reverse=True):  # the lowest last
            self.saved.update(all_index_update_counts[device])

    def advance(self, index, count):
        """Count an update of ``index``, whose state ends with ``count`` (its one-item
        list ``[t]``, see ``MyAdam.create_state``): ``t`` goes up by 1 there, and MXNet's
        count of ``index`` for the current device and ``num_update`` (the largest count,
        which ``lr_scheduler`` reads) follow it. Returns ``t``.

        A state saved without its step count (``count`` None, ``(m, v[, vmax])``) counts
        in the optimizer's counts, as MXNet does: from this device's count of
        ``index``; on a device that has none, from the count of ``index`` in the
        states file this optimizer was loaded from (of its lowest-numbered device
        that has one: the Trainer saves its first device's states), else from
        ``begin_num_update``.
        """
        t, = self._advance((index,), (count,), (True,))
        return t

    def _advance(self, indices, counts, flags):
        """:meth:`advance` of each of ``indices`` (its state's ``counts``) whose flag in
        ``flags`` is set, in order: their new step counts, None for the others."""
        opt = self.optimizer
        mxnets, ts, largest = opt._index_update_count, [], opt.num_update
        for index, count, counted in zip(indices, counts, flags, strict=True):
            if not counted:
                t = None
            else:
                if count is None:
                    t = mxnets[index] = 1 + mxnets.get(
                        index, self.saved.get(index, opt.begin_num_update))
                else:
                    t = mxnets[index] = count[0] = count[0] + 1
                if t > largest:
                    largest = t
            ts.append(t)
        opt.num_update = largest
        return ts

    def snapshot(self, indices, counts):
        """The step counts of ``indices``, whose states end with ``counts`` (see
        :meth:`advance`), as they are now, for :meth:`restore`: per index, its
        state's count and MXNet's for the current device; and ``num_update``."""
        return (indices, counts, [None if count is None else count[0] for count in counts],
                list(map(self.optimizer._index_update_count.get, indices)),
                self.optimizer.num_update)

    def restore(self, counts):
        """Put the step counts back as :meth:`snapshot` saw them, and ``num_update`` to the
        largest of its value then and MXNet's counts now."""
        indices, states, ts, mxnet_counts, num_update = counts
        mxnets = self.optimizer._index_update_count
        for index, count, t, kept in zip(indices, states, ts, mxnet_counts, strict=True):
            if count is not None:
                count[0] = t
            if kept is None:
                mxnets.pop(index, None)
            else:
                mxnets[index] = kept
        self.optimizer.num_update = max([num_update, *mxnets.values()])

    @staticmethod
    def alike(counts):
        """Do the states that end with ``counts`` (see :meth:`advance`) all hold the same
        step count (none saved without one)?"""
        first = counts[0]
        return first is not None and all(count is not None and count[0] == first[0]
                                          for count in counts)

    def counted(self, indices, counts, finite, steps_of):
        """``steps_of(ts, num_update)``, ``ts`` the new step count of each parameter of
        ``indices`` whose ``finite`` flag is set, its update counted (:meth:`advance`;
        ``counts``: the ends of their states), None for the others, and ``num_update``
        as it was before; every step count is back as it was if this raises (a
        scheduler's error, a bad learning rate)."""
        before = self.snapshot(indices, counts)
        try:
            return steps_of(self._advance(indices, counts, finite), before[-1])
        except BaseException:
            self.restore(before)
            raise

    def counted_first(self, indices, counts, steps_of, apply):
        """``(steps, finite, overflow)``: every update of ``indices`` counted (as
        :meth:`counted` with every flag set), ``(finite, overflow) = apply(steps)`` run,
        which checks each gradient as it steps and leaves a parameter whose gradient is
        not finite untouched; then the counts of those are given back, and ``steps`` are
        :meth:`counted`'s of ``finite``. Exact when a parameter's Step does not depend on
        another's count (see :meth:`alike`). Every count is back as it was if this raises."""
        before = self.snapshot(indices, counts)
        try:
            steps = steps_of(self._advance(indices, counts, [True] * len(indices)), before[-1])
            finite, overflow = apply(steps)
        except BaseException:
            self.restore(before)
            raise
        if False in finite:
            self.restore(before)
            steps = self.counted(indices, counts, finite, steps_of)
        return steps, finite, overflow


class BadUpdates:
    """The bad updates of ``optimizer``'s parameters (MyAdam's): the runs of them in a row,
    and ``num_skipped``, the optimizer's count of them all.

    Parameters
    ----------
    optimizer : MyAdam
        Whose ``nonfinite`` and ``max_skips`` decide, and whose ``num_skipped`` counts.
    name : callable
        ``name(index)``, the parameter as warnings and errors call it.
    """

    def __init__(self, optimizer, name):
        self.optimizer, self.name = optimizer, name
        self.in_a_row = {}  # index -> bad updates in a row (absent: 0)

    def refuse_bad_gradients(self, indices, finite):
        """Raise for the gradients not ``finite`` (one flag per parameter) that are not
        to be skipped: any under ``nonfinite='raise'``; under ``'skip'``, the
        ``max_skips``-th bad update in a row of a parameter. Nothing is updated then."""
        bad = [i for i, ok in zip(indices, finite, strict=True) if not ok]
        if self.optimizer.nonfinite == 'raise' and bad:
            raise FloatingPointError(f"myadam: the gradient of {', '.join(map(self.name, bad))} "
                                     "holds NaN or Inf; nothing was updated")
        max_skips = self.optimizer.max_skips
        stuck = [i for i in bad
                 if max_skips is not None and self.in_a_row.get(i, 0) + 1 >= max_skips]
        if stuck:
            raise FloatingPointError(
                f"myadam: the update of {', '.join(map(self.name, stuck))} has failed "
                f"{max_skips} times in a row (max_skips={max_skips}): its gradient "
                "holds NaN or Inf again (a NaN kept in an accumulated gradient, "
                "grad_req='add', or in the weight or the data?); nothing was updated")

    def skips_alone(self, indices):
        """Would a gradient of ``indices`` that is not finite be skipped, and nothing else
        change? Under ``nonfinite='skip'``, unless it is the ``max_skips``-th bad update
        in a row of its parameter (:meth:`refuse_bad_gradients` raises then)."""
        max_skips = self.optimizer.max_skips
        return self.optimizer.nonfinite == 'skip' and (
            not self.in_a_row or max_skips is None
            or all(self.in_a_row.get(index, 0) + 1 < max_skips for index in indices))

    def count_skips(self, indices, finite):
        """Count, and warn about, the parameters skipped for a gradient not ``finite``."""
        if False not in finite:  # the usual case, without a loop over the parameters
            return
        for index, ok in zip(indices, finite, strict=True):
            if not ok:
                self.optimizer.num_skipped += 1
                self._bad(index, "skipped the update of {name}: its gradient holds NaN or Inf")

    def check_overflows(self, indices, steps, overflow):
        """After a step (``steps[i]`` None: parameter ``i`` not stepped), raise or count
        the parameters whose step overflowed (``overflow``: flags of
        :data:`adam_plugin.kernel.V_OVERFLOW` and :data:`~adam_plugin.kernel.W_OVERFLOW`,
        see :meth:`adam_plugin.dispatch.Batch.apply`), and end the runs of bad updates
        of the parameters stepped well."""
        found = {index: flags for index, flags in zip(indices, overflow, strict=True)
                 if flags} if any(overflow) else {}
        if found and self.optimizer.nonfinite == 'raise':
            problems = []
            for kind, text in _OVERFLOWS.items():
                names = [self.name(index) for index, flags in found.items() if flags & kind]
                if names:
                    problems.append(text.format(name=', '.join(names)))
            raise FloatingPointError(f"myadam: {'; '.join(problems)}; this update call was "
                                     "applied")
        for index, flags in found.items():
            self.optimizer.num_skipped += 1
            self._bad(index, "; ".join(text for kind, text in _OVERFLOWS.items() if flags & kind))
        if self.in_a_row:  # else no run of bad updates to end
            for index, step in zip(indices, steps, strict=True):
                if step is not None and index not in found:
                    self.in_a_row.pop(index, None)
        max_skips = self.optimizer.max_skips
        stuck = [index for index in found
                 if max_skips is not None and self.in_a_row[index] >= max_skips]
        if stuck:
            raise FloatingPointError(
                f"myadam: the update of {', '.join(map(self.name, stuck))} has gone wrong "
                f"{max_skips} times in a row (max_skips={max_skips}): it overflowed again "
                "(see the warnings); this update call was applied")

    def good(self, indices):
        """The updates of ``indices`` went well: their runs of bad ones end."""
        if self.in_a_row:  # else no run to end
            for index in indices:
                self.in_a_row.pop(index, None)

    def _bad(self, index, what):
        """Count a bad update of ``index`` in its run of bad ones; warn at the first and at
        every ``WARN_EVERY``-th. ``what`` is the warning's first sentence, with ``{name}``."""
        run = self.in_a_row[index] = self.in_a_row.get(index, 0) + 1
        if run == 1 or run % WARN_EVERY == 0:
            _warn.warn(f"myadam: {what.format(name=self.name(index))} ({run} in a row for "
                       f"this parameter, {self.optimizer.num_skipped} in all; at max_skips="
                       f"{self.optimizer.max_skips} in a row, FloatingPointError)")
