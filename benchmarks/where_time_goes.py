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

With ``--opcodes`` nothing is timed: the Python bytecodes a step runs are counted (a trace
hook), for ``myadam``, MXNet's ``adam`` and a step that does nothing (MXNet's own part),
then per function for ``myadam``. Unlike a time, the count does not move with the load of
a shared machine or with what the cache holds, so a change to the Python of a step can be
weighed by it (a bytecode is not a fixed time: those that call into C, MXNet's operators
and the kernel included, count one).

    python benchmarks/where_time_goes.py sparse_embedding
    python benchmarks/where_time_goes.py kvstore_two_contexts --opcodes
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
    ('adam_plugin.engine', 'EngineQueue.take_all'),
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


def count_opcodes(loop, steps):
    """Run ``steps`` steps of ``loop`` (forward and backward untraced): per function
    (``file:name``, the file from its package on), the bytecodes it ran and its calls, a
    step, each a ``collections.Counter``."""
    import mxnet as mx
    opcodes, calls = collections.Counter(), collections.Counter()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

    def trace(frame, event, _):
        frame.f_trace_opcodes = True
        code = frame.f_code
        path = code.co_filename.split('site-packages' + os.sep)[-1]
        name = f"{path[len(root):] if path.startswith(root) else path}:{code.co_name}"
        if event == 'opcode':
            opcodes[name] += 1
        elif event == 'call':
            calls[name] += 1
        return trace

    for _ in range(steps):
        loop.forward_backward()
        mx.nd.waitall()
        sys.settrace(trace)
        try:
            loop.step()
        finally:
            sys.settrace(None)
        mx.nd.waitall()
    return (collections.Counter({k: v / steps for k, v in opcodes.items()}),
            collections.Counter({k: v / steps for k, v in calls.items()}))


def print_opcodes(case, make, steps, quick, top):
    """--opcodes: the bytecodes a step of ``case`` runs, for each contender, then per
    function for 'myadam'."""
    counted = {who: count_opcodes(loop, steps) for who, loop in bench_loops._loops(
        make, quick, bench_loops.STEP_CONTENDERS).items()}  # each warmed up
    totals = ', '.join(f"{who} {sum(opcodes.values()):.0f}"
                       for who, (opcodes, _) in counted.items())
    print(f"{case}: Python bytecodes a step ({steps} steps): {totals}")
    opcodes, calls = counted['myadam']
    own = sum(count for name, count in opcodes.items() if name.startswith('adam_plugin'))
    print(f"myadam's, in adam_plugin: {own:.0f}")
    print(f"myadam's, per function (the {top} that ran most), a step:")
    for name, count in opcodes.most_common(top):
        print(f"  {name:60} {count:9.0f}   ({calls[name]:g} calls)")


def main():
    cases = {**bench_loops.STEP_CASES, **bench_loops.MODELS}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('case', choices=sorted(cases))
    parser.add_argument('--steps', type=int,
                        help='steps run: 300 timed by default, 3 with --opcodes')
    parser.add_argument('--quick', action='store_true', help="bench_loops.py's tiny sizes")
    parser.add_argument('--twice', action='store_true',
                        help='time the kernel\'s checked step again right after it')
    parser.add_argument('--unchecked', action='store_true',
                        help="the kernel's step without its check for NaN/Inf")
    parser.add_argument('--opcodes', action='store_true',
                        help='count the Python bytecodes a step runs instead of timing it')
    parser.add_argument('--top', type=int, default=30,
                        help='with --opcodes, the functions listed')
    args = parser.parse_args()
    if args.opcodes:
        print_opcodes(args.case, cases[args.case][1], args.steps or 3, args.quick, args.top)
        return
    args.steps = args.steps or 300
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
