"""Where the time of a 'myadam' step goes in a real loop: the wall time per step spent in
each of the functions a step calls, for a case of ``bench_loops.py`` (a storage mode or a
model).

Each function of ``PARTS`` is wrapped by a timer (which adds about a microsecond to each
call, so small parts read high); the loop runs forward and backward, waits for them, then
times ``trainer.step`` with its work, as ``bench_loops.py`` does. Parts nest: a line's
time includes those of the parts it calls. With ``--twice`` the kernel's checked step is
called a second time right after the first, on the same arrays (stepping them twice),
and timed apart: the same work with the arrays in the cache. With ``--unchecked`` every
other step runs the kernel's step without its check (``HandleTable.adam_steps``, as if
every gradient were finite) in place of its checked step, and the two calls' times are
given side by side: what the check costs. Run alone, on a quiet machine.

    python benchmarks/where_time_goes.py sparse_embedding
    python benchmarks/where_time_goes.py kvstore_two_contexts --steps 100
    python benchmarks/where_time_goes.py embedding_sparse_grad --twice
    python benchmarks/where_time_goes.py dense_resnet18 --unchecked
"""
import argparse
import collections
import functools
import itertools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_loops  # noqa: E402  (beside this file: found through the line above)

# (module, attribute path) of the functions timed, outermost first.
PARTS = [
    ('mxnet.gluon', 'Trainer.step'),
    ('mxnet.optimizer', 'Updater.__call__'),
    ('adam_plugin.optimizer', 'MyAdam._update_impl'),
    ('adam_plugin.engine', 'EngineQueue.queue'),
    ('adam_plugin.engine', 'EngineQueue.queues'),
    ('adam_plugin.engine', 'EngineQueue._take_run'),
    ('adam_plugin.dispatch', 'Batches.__call__'),
    ('adam_plugin.dispatch', 'CheckedLayouts.__call__'),
    ('adam_plugin.dispatch', 'Batch.__init__'),
    ('adam_plugin.dispatch', 'Batch.refresh'),
    ('adam_plugin.kernel', 'describe'),
    ('adam_plugin.dispatch', '_rows'),
    ('adam_plugin.kernel', 'sparse_rows'),
    ('adam_plugin.kernel', 'HandleTable.__init__'),
    ('adam_plugin.step_values', 'StepValues.rule'),
    ('adam_plugin.step_values', 'StepValues.steps'),
    ('adam_plugin.step_values', 'StepValues.step'),
    ('adam_plugin.counts', 'StepCounts.counted_first'),
    ('adam_plugin.counts', 'StepCounts.advance'),
    ('adam_plugin.kernel', 'HandleTable.checked_steps'),
    ('adam_plugin.kernel', 'HandleTable.adam_steps'),
    ('adam_plugin.kernel', 'HandleTable.queue'),
]


AGAIN = 'HandleTable.checked_steps again'  # with --twice


def wrap_parts(spent, calls, twice, unchecked):
    """Wrap every function of PARTS in place: its seconds add up in ``spent[name]``, its
    calls in ``calls[name]``; ``twice``, ``unchecked``: see --twice and --unchecked."""
    import importlib

    from adam_plugin import kernel
    if unchecked:
        checked_steps, turns = kernel.HandleTable.checked_steps, itertools.count()

        def alternate(table, steps):
            if next(turns) % 2:  # timed as HandleTable.adam_steps
                return [True] * len(steps), table.adam_steps(steps)
            start = time.perf_counter()
            try:
                return checked_steps(table, steps)
            finally:
                spent['HandleTable.checked_steps'] += time.perf_counter() - start
                calls['HandleTable.checked_steps'] += 1
        kernel.HandleTable.checked_steps = alternate
    if twice:
        checked_steps = kernel.HandleTable.checked_steps

        def again(table, steps):
            found = checked_steps(table, steps)
            start = time.perf_counter()
            checked_steps(table, steps)
            spent[AGAIN] += time.perf_counter() - start
            calls[AGAIN] += 1
            return found
        kernel.HandleTable.checked_steps = again
    for module_name, path in PARTS:
        if unchecked and path == 'HandleTable.checked_steps':
            continue  # timed by alternate
        owner = importlib.import_module(module_name)
        *outer, attribute = path.split('.')
        for name in outer:
            owner = getattr(owner, name)
        function = getattr(owner, attribute)

        @functools.wraps(function)
        def timed(*args, _function=function, _name=path, **kwargs):
            start = time.perf_counter() - spent[AGAIN]  # not the call made again
            try:
                return _function(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - spent[AGAIN] - start
                calls[_name] += 1
        setattr(owner, attribute, timed)


def main():
    cases = {**bench_loops.STEP_CASES, **bench_loops.MODELS}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('case', choices=sorted(cases))
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--quick', action='store_true', help="bench_loops.py's tiny sizes")
    parser.add_argument('--twice', action='store_true',
                        help='time the kernel\'s checked step again right after it')
    parser.add_argument('--unchecked', action='store_true',
                        help="the kernel's step without its check for NaN/Inf")
    args = parser.parse_args()
    import mxnet as mx
    name, options = bench_loops.OPTIMIZERS['myadam']
    loop = cases[args.case][1](name, options, args.quick)
    for _ in range(3):  # warm-up: states, the kernel's threads
        loop.iteration()
    mx.nd.waitall()
    spent, calls = collections.defaultdict(float), collections.Counter()
    wrap_parts(spent, calls, args.twice, args.unchecked)
    steps = []
    for _ in range(args.steps):
        loop.forward_backward()
        mx.nd.waitall()
        steps.append(bench_loops._timed(loop.step))
    print(f"{args.case}: {args.steps} steps, median step {statistics.median(steps):.3f} ms "
          "(timers included); per step, in microseconds:")
    for path in [path for _, path in PARTS] + [AGAIN]:
        if calls[path]:
            print(f"  {path:32} {spent[path] / args.steps * 1e6:9.1f}   "
                  f"({calls[path] / args.steps:g} calls)")
    if args.unchecked:
        checked, unchecked = (spent[name] / calls[name] * 1e6 for name in (
            'HandleTable.checked_steps', 'HandleTable.adam_steps'))
        print(f"the kernel's call, in turns: with its check {checked:.1f}, without "
              f"{unchecked:.1f} microseconds")


if __name__ == '__main__':
    main()
