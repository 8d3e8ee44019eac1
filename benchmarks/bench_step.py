"""Time one optimizer step over all parameters, as ``gluon.Trainer.step`` makes it.

Contenders: MXNet's built-in ``'adam'``, ``'myadam'`` (fused route, the default, with
the kernel as installed: the portable build unless it was installed with
``ADAM_PLUGIN_NATIVE=1``), ``'myadam native'`` (the same with the kernel compiled by
``setup.py`` with ``ADAM_PLUGIN_NATIVE=1`` into a temporary directory and loaded beside
it), ``'myadam'`` with ``fused=False`` (the textbook NDArray ops), ``'free step'`` (an
optimizer that does nothing: what MXNet's own ``Trainer.step`` costs, see
register_free_step), and, when torch is
installed, ``torch.optim.Adam(fused=True)`` on CPU in its own process with the same
number of threads as MXNet's OpenMP and the kernel (``OMP_NUM_THREADS``, else the
number of cores), and again with one thread; both also with the pass over the gradients
that ``GradScaler.unscale_`` makes first for a PyTorch user who wants a step skipped on
NaN/Inf (see TORCH_CONTENDERS). Workloads: one 10M-element tensor, 200 tensors of 1K, and the
parameter shapes of ``gluon.model_zoo.vision.resnet18_v1``.

Only ``trainer.step`` is timed, waited for, not the marking of the gradients as new that
stands for the backward pass. Rounds are interleaved (every contender steps once per round,
torch too, in an order shuffled each round: see turns)
and the table shows medians and ratios to the built-in Adam, then the ratio of the installed
kernel's step to the native one's. A second part measures
memory: in a fresh process per optimizer, the growth of peak RSS over 5 steps on the
10M tensor (Linux only), counted from just before the first step (so it includes the moment
buffers and anything the first step loads or starts, such as the kernel's threads),
and from after the first step (steady state: parameter-sized temporaries would show
here), plus the growth of anonymous memory, which leaves out shared libraries mapped
from disk, and the growth from before step 1 once more in a process whose optimizer
code was run first by one step on a separate 16-element parameter. A third part
times the compilation of the kernel, portable and native (what ``pip install`` does
once; every process then loads the built library), and the first 'myadam' step of a
fresh process.

The storage modes (sparse, float16, the KVStore's calls) and whole training iterations
are measured in real training loops by ``benchmarks/bench_loops.py``.

    python benchmarks/bench_step.py                # everything
    python benchmarks/bench_step.py --json out.json
"""
import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402  (beside this file: found through the line above, also under PYTHONSAFEPATH)

THREADS = int(os.environ.get('OMP_NUM_THREADS', os.cpu_count()))
FREE_STEP = 'freestep'  # see register_free_step
MXNET_OPTIMIZERS = {
    'mxnet adam': ('adam', {}),
    'myadam': ('myadam', {}),
    'myadam native': ('myadam', {}),  # with the native kernel (see with_kernel)
    'myadam textbook': ('myadam', {'fused': False}),
    'free step': (FREE_STEP, {}),
}
MEMORY_CONTENDERS = ['mxnet adam', 'myadam', 'myadam textbook']


def workloads(tiny):
    """name -> list of parameter shapes."""
    if tiny:
        return {'1x10M': [(1000,)], '200x1K': [(10,)] * 5, 'resnet18': [(4, 3, 3, 3), (4,)]}
    return {'1x10M': [(10_000_000,)], '200x1K': [(1000,)] * 200, 'resnet18': resnet18_shapes()}


def resnet18_shapes():
    """Shapes of resnet18_v1's parameters, from one forward pass on a dummy input."""
    import mxnet as mx
    from mxnet import gluon
    net = gluon.model_zoo.vision.resnet18_v1()
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    return [p.shape for p in net.collect_params().values()]


def register_free_step():
    """Register FREE_STEP with MXNet: an optimizer whose update does nothing, so that a step
    with it costs what MXNet's own ``Trainer``, ``Updater`` (and KVStore) cost on their own,
    the part of a step no optimizer plugged into MXNet can remove. It takes one parameter a
    call (``aggregate_num`` 0), MXNet's cheapest way."""
    import mxnet as mx
    if FREE_STEP in mx.optimizer.Optimizer.opt_registry:
        return

    @mx.optimizer.Optimizer.register
    class FreeStep(mx.optimizer.Optimizer):
        def create_state(self, index, weight):
            return None

        def update(self, index, weight, grad, state):
            pass

        update_multi_precision = update

    assert FREE_STEP in mx.optimizer.Optimizer.opt_registry


def mxnet_step(shapes, optimizer, options, seed=0):
    """``(ready, step)`` over fresh parameters with fixed random gradients: ``ready()``
    marks the gradients new, as a backward pass does, and ``step()`` is ``trainer.step(1)``,
    waited for."""
    import mxnet as mx
    from mxnet import gluon

    import adam_plugin  # noqa: F401  (registers 'myadam')
    register_free_step()
    mx.random.seed(seed)
    params = []
    for i, shape in enumerate(shapes):
        p = gluon.Parameter(f'p{i}', shape=shape)
        p.initialize(init=mx.init.Normal())
        mx.nd.random.normal(shape=shape, out=p.grad())  # in place: no transient peak in RSS
        params.append(p)
    trainer = gluon.Trainer(params, optimizer, dict(options, learning_rate=1e-3))
    arrays = [p.data() for p in params]
    mx.nd.waitall()  # the set-up's allocations land here, not in the first step

    def ready():
        for a in arrays:
            a._fresh_grad = True

    def step():
        trainer.step(1)
        mx.nd.waitall()
    return ready, step


def build_kernel(into, native):
    """Compile the kernel as ``pip install`` does, into the directory ``into``.

    Returns the library's path and the seconds the build took; ``native``: as with
    ``ADAM_PLUGIN_NATIVE=1``, for this machine's CPU only.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, ADAM_PLUGIN_NATIVE='1' if native else '0')
    start = time.perf_counter()
    subprocess.run([sys.executable, 'setup.py', 'build_ext', '--build-lib', into,
                    '--build-temp', into], cwd=root, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    path = os.path.join(into, 'adam_plugin', 'libadam_kernel.so')
    if not os.path.exists(path):  # optional: setup.py does not fail without it
        raise RuntimeError('setup.py build_ext did not build the kernel')
    return path, seconds


def with_kernel(step, library):
    """``step`` with adam_plugin.kernel using ``library`` (a loaded kernel) meanwhile."""
    from adam_plugin import kernel

    def swapped():
        installed, kernel.LIBRARY = kernel.LIBRARY, library
        try:
            step()
        finally:
            kernel.LIBRARY = installed
    return swapped


# name -> (threads, checked): checked, the step runs as for a PyTorch user who wants a step
# skipped on NaN/Inf: GradScaler.unscale_'s pass over every gradient
# (torch._amp_foreach_non_finite_check_and_unscale_, by 1 here), then the step unless it
# found one.
TORCH_CONTENDERS = {'torch fused': (THREADS, False), 'torch fused 1 thread': (1, False),
                    'torch fused+check': (THREADS, True),
                    'torch fused+check 1 thread': (1, True)}


def torch_server():
    """Child process: read 'workload threads checked' per line, time one fused Adam step
    (after the non-finite check when checked is 1), print ms."""
    import torch
    shapes = json.loads(sys.stdin.readline())
    optims, grads = {}, {}
    for name, shape_list in shapes.items():
        params = [torch.nn.Parameter(torch.randn(*s)) for s in shape_list]
        for p in params:
            p.grad = torch.randn_like(p)
        optims[name] = torch.optim.Adam(params, lr=1e-3, fused=True)
        optims[name].step()
        grads[name] = [p.grad for p in params]
    found_inf, inv_scale = torch.zeros(1), torch.ones(1)
    print('ready', flush=True)
    for line in sys.stdin:
        name, threads, checked = line.split()
        torch.set_num_threads(int(threads))
        start = time.perf_counter()
        if checked == '1':
            found_inf.zero_()
            torch._amp_foreach_non_finite_check_and_unscale_(grads[name], found_inf, inv_scale)
        if checked == '0' or found_inf.item() == 0:
            optims[name].step()
        print((time.perf_counter() - start) * 1e3, flush=True)


# The ratios to torch each row of the table gives: key -> the contender.
TORCH_RATIOS = {'ratio_to_torch_fused': 'torch fused',
                'ratio_to_torch_fused_check': 'torch fused+check'}


def start_torch(shapes):
    if importlib.util.find_spec('torch') is None:
        return None
    child = subprocess.Popen([sys.executable, __file__, '--torch-server'], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=dict(os.environ, OMP_NUM_THREADS=str(THREADS)))
    child.stdin.write(json.dumps(shapes) + '\n')
    child.stdin.flush()
    assert child.stdout.readline().strip() == 'ready'
    return child


def turns(items, rounds, seed=0):
    """Per round, ``items`` (a list) in an order of their own: a random permutation from a
    generator seeded with ``seed``, so that a run is repeated as it was. Over the rounds
    each item goes first, and follows each other one, about equally often: what a step
    leaves behind (OpenMP threads still spinning, a cache it filled) falls on every
    contender alike, not always on the one after it."""
    rng = random.Random(seed)
    for _ in range(rounds):
        yield rng.sample(items, len(items))


def time_rounds(shapes_by_workload, rounds, native_kernel):
    """{workload: {contender: [ms per round]}}, contenders interleaved within each round,
    torch's among them (see turns).

    ``native_kernel``: the loaded library 'myadam native' steps with.
    """
    torch_child = start_torch(shapes_by_workload)
    steps = {(w, name): mxnet_step(shapes, *MXNET_OPTIMIZERS[name])
             for w, shapes in shapes_by_workload.items() for name in MXNET_OPTIMIZERS}
    for w in shapes_by_workload:
        ready, step = steps[w, 'myadam native']
        steps[w, 'myadam native'] = ready, with_kernel(step, native_kernel)
    for ready, step in steps.values():  # warm-up: state creation, the kernel's threads
        ready()
        step()
    timed = {key: timed_step(*ready_step) for key, ready_step in steps.items()}
    if torch_child:
        for w in shapes_by_workload:
            for name, (threads, checked) in TORCH_CONTENDERS.items():
                timed[w, name] = torch_step(torch_child, w, threads, checked)
    times = {w: {} for w in shapes_by_workload}
    for order in turns(list(timed.items()), rounds):
        for (w, name), time_one in order:
            times[w].setdefault(name, []).append(time_one())
    if torch_child:
        torch_child.stdin.close()
        torch_child.wait()
    return times


def timed_step(ready, step):
    """A function that times ``step()`` after ``ready()``: milliseconds."""
    def time_one():
        ready()
        start = time.perf_counter()
        step()
        return (time.perf_counter() - start) * 1e3
    return time_one


def torch_step(child, workload, threads, checked):
    """A function that has the torch server ``child`` time one step: milliseconds."""
    def time_one():
        child.stdin.write(f'{workload} {threads} {int(checked)}\n')
        child.stdin.flush()
        return float(child.stdout.readline())
    return time_one


def memory_child(optimizer, options, size, steps, warm_up):
    """Child process: print peak-RSS growth (MB) from before the first step and after it.

    Also the growth of anonymous memory (RssAnon, at the end): peak RSS also counts
    pages of shared libraries mapped from disk. The peak (VmHWM)
    is reset to the current RSS at each starting point (Linux's
    ``/proc/self/clear_refs``), so transient peaks of the set-up do not hide growth.
    With ``warm_up``, one step on a separate 16-element parameter first loads the
    optimizer's code, so what remains is what the steps themselves allocate.
    """
    if warm_up:
        ready, step = mxnet_step([(16,)], optimizer, options)
        ready()
        step()
    ready, step = mxnet_step([(size,)], optimizer, options)
    ready()
    before, anon_before = _reset_peak_mb(), _status_mb('RssAnon')
    step()
    first_peak = _peak_mb()
    after_first = _reset_peak_mb()
    for _ in range(steps - 1):
        ready()
        step()
    print(json.dumps({'growth_mb': max(first_peak, _peak_mb()) - before,
                      'steady_growth_mb': _peak_mb() - after_first,
                      'anon_growth_mb': _status_mb('RssAnon') - anon_before}))


def _status_mb(field):
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ':')) / 1024


def _peak_mb():
    return _status_mb('VmHWM')


def _reset_peak_mb():
    """Reset the peak RSS to the current RSS and return it."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return _status_mb('VmRSS')


def measure_memory(size, steps=5):
    out = {'size': size, 'steps': steps}
    for name in MEMORY_CONTENDERS:
        for warm_up in (False, True):
            result = subprocess.run([sys.executable, __file__, '--memory-child', name, str(size),
                                     str(steps), str(int(warm_up))],
                                    check=True, capture_output=True, text=True)
            growth = json.loads(result.stdout.strip().splitlines()[-1])
            if warm_up:
                out[name]['growth_after_warm_up_mb'] = growth['growth_mb']
            else:
                out[name] = growth
    return out


def first_step_child():
    """Child process: print the seconds the first 'myadam' step takes."""
    ready, step = mxnet_step([(1000,)], 'myadam', {})
    ready()
    start = time.perf_counter()
    step()
    print(time.perf_counter() - start)


def measure_first_step():
    """Seconds for a fresh process's first 'myadam' step."""
    result = subprocess.run([sys.executable, __file__, '--first-step-child'],
                            check=True, capture_output=True, text=True)
    return float(result.stdout.strip().splitlines()[-1])


def report(times, memory, first_step, kernel):
    rows = {}
    print(f"{'workload':10} {'contender':26} {'median ms':>10} {'vs mxnet adam':>14}"
          f" {'vs torch fused':>15} {'vs torch fused+check':>21}")
    for w, by_name in times.items():
        base = statistics.median(by_name['mxnet adam'])
        torch_ms = {key: statistics.median(by_name[name]) if name in by_name else None
                    for key, name in TORCH_RATIOS.items()}
        for name, samples in by_name.items():
            ms = statistics.median(samples)
            rows.setdefault(w, {})[name] = {
                'median_ms': ms, 'ratio_to_mxnet_adam': ms / base, 'rounds': len(samples),
                **{key: ms / t_ms if t_ms else None for key, t_ms in torch_ms.items()}}
            vs_torch = ''.join(f"{ms / t_ms:{width}.2f}" if t_ms else f"{'-':>{width}}"
                               for t_ms, width in zip(torch_ms.values(), (15, 21), strict=True))
            print(f"{w:10} {name:26} {ms:10.2f} {ms / base:14.2f} {vs_torch}")
    kernel['installed_over_native'] = {
        w: rows[w]['myadam']['median_ms'] / rows[w]['myadam native']['median_ms'] for w in rows}
    print(f"\nthe installed kernel (variants {' '.join(kernel['installed_variants'])}; "
          f"using {kernel['installed_variant']}) against the native build, median step ratio: "
          + ', '.join(f"{w} {r:.3f}" for w, r in kernel['installed_over_native'].items()))
    print(f"\npeak RSS growth over {memory['steps']} steps on one tensor of {memory['size']:,}"
          " elements (MB), a fresh process each:")
    for name in MEMORY_CONTENDERS:
        m = memory[name]
        print(f"  {name:16} from before step 1: {m['growth_mb']:7.1f}   "
              f"after step 1: {m['steady_growth_mb']:6.1f}   "
              f"anonymous memory, from before step 1: {m['anon_growth_mb']:6.1f}   "
              f"from before step 1, code loaded first: {m['growth_after_warm_up_mb']:6.1f}")
    print(f"\ncompiling the kernel (setup.py build_ext, once per install): "
          f"{first_step['build_s']:.2f} s portable, {first_step['build_native_s']:.2f} s native; "
          f"first 'myadam' step of a fresh process: {first_step['first_step_s'] * 1e3:.1f} ms")
    return {'threads': THREADS, 'timings': rows, 'memory': memory, 'first_step': first_step,
            'kernel': kernel}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=45)
    parser.add_argument('--tiny', action='store_true', help='tiny sizes (a smoke test)')
    parser.add_argument('--json', metavar='PATH',
                        help="also write the results as JSON ('-': stdout)")
    parser.add_argument('--torch-server', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--memory-child', nargs=4, help=argparse.SUPPRESS)
    parser.add_argument('--first-step-child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_server:
        return torch_server()
    if args.first_step_child:
        return first_step_child()
    if args.memory_child:
        name, size, steps, warm_up = args.memory_child
        return memory_child(*MXNET_OPTIMIZERS[name], int(size), int(steps), bool(int(warm_up)))
    results = full_run(args)
    if args.json == '-':
        print(json.dumps(results, indent=1))
    elif args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


def full_run(args):
    """Every part: the dense workloads, memory, compilation."""
    from adam_plugin import kernel
    ran_on = machine.describe()
    shapes = workloads(args.tiny)
    with tempfile.TemporaryDirectory() as portable, tempfile.TemporaryDirectory() as native:
        build_s = build_kernel(portable, native=False)[1]
        native_path, build_native_s = build_kernel(native, native=True)
        native_kernel = kernel.load(native_path)
        variants = {'installed_variants': kernel.variants(),
                    'installed_variant': kernel.variant(),
                    'native_variants': native_kernel.variants().decode().split()}
        times = time_rounds(shapes, args.rounds, native_kernel)
    memory = measure_memory(shapes['1x10M'][0][0])
    first_step = {'build_s': build_s, 'build_native_s': build_native_s,
                  'first_step_s': measure_first_step()}
    return dict(report(times, memory, first_step, variants), machine=ran_on,
                load_after=os.getloadavg()[0])


if __name__ == '__main__':
    main()
