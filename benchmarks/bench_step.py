"""Time one optimizer step over all parameters, as ``gluon.Trainer.step`` makes it.

Contenders: MXNet's built-in ``'adam'``, ``'myadam'`` (fused route, the default, with
the kernel as installed: the portable build unless it was installed with
``ADAM_PLUGIN_NATIVE=1``), ``'myadam native'`` (the same with the kernel compiled by
``setup.py`` with ``ADAM_PLUGIN_NATIVE=1`` into a temporary directory and loaded beside
it), ``'myadam'`` with ``fused=False`` (the textbook NDArray ops), and, when torch is
installed, ``torch.optim.Adam(fused=True)`` on CPU in its own process with the same
number of threads as MXNet's OpenMP and the kernel (``OMP_NUM_THREADS``, else the
number of cores), and again with one thread. Workloads: one 10M-element tensor, 200 tensors of 1K, and the
parameter shapes of ``gluon.model_zoo.vision.resnet18_v1``.

Rounds are interleaved (every contender steps once per round, in turn, torch too)
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

A fourth part times the cases of the storage modes (issue 19), each 'myadam'
(``epsilon_mode='hat'``, the form of MXNet's Adam) against 'adam' on synthetic data,
interleaved round by round: the median of the optimizer's step alone (the forward and
backward pass that make the gradients are not timed) and their ratio. See CASES.

    python benchmarks/bench_step.py                # everything
    python benchmarks/bench_step.py --json out.json
    python benchmarks/bench_step.py --case sparse_embedding   # one case alone (repeatable)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


THREADS = int(os.environ.get('OMP_NUM_THREADS', os.cpu_count()))
MXNET_OPTIMIZERS = {
    'mxnet adam': ('adam', {}),
    'myadam': ('myadam', {}),
    'myadam native': ('myadam', {}),  # with the native kernel (see with_kernel)
    'myadam textbook': ('myadam', {'fused': False}),
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


def mxnet_step(shapes, optimizer, options, seed=0):
    """A ``trainer.step(1)`` closure over fresh parameters with fixed random gradients."""
    import mxnet as mx
    from mxnet import gluon
    import adam_plugin  # noqa: F401  (registers 'myadam')
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

    def step():
        for a in arrays:
            a._fresh_grad = True
        trainer.step(1)
        mx.nd.waitall()
    return step


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


TORCH_THREADS = {'torch fused': THREADS, 'torch fused 1 thread': 1}


def torch_server():
    """Child process: read 'workload threads' per line, time one fused Adam step, print ms."""
    import torch
    shapes = json.loads(sys.stdin.readline())
    optims = {}
    for name, shape_list in shapes.items():
        params = [torch.nn.Parameter(torch.randn(*s)) for s in shape_list]
        for p in params:
            p.grad = torch.randn_like(p)
        optims[name] = torch.optim.Adam(params, lr=1e-3, fused=True)
        optims[name].step()
    print('ready', flush=True)
    for line in sys.stdin:
        name, threads = line.split()
        torch.set_num_threads(int(threads))
        start = time.perf_counter()
        optims[name].step()
        print((time.perf_counter() - start) * 1e3, flush=True)


def start_torch(shapes):
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    child = subprocess.Popen([sys.executable, __file__, '--torch-server'], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=dict(os.environ, OMP_NUM_THREADS=str(THREADS)))
    child.stdin.write(json.dumps(shapes) + '\n')
    child.stdin.flush()
    assert child.stdout.readline().strip() == 'ready'
    return child


def time_rounds(shapes_by_workload, rounds, native_kernel):
    """{workload: {contender: [ms per round]}}, contenders interleaved within each round.

    ``native_kernel``: the loaded library 'myadam native' steps with.
    """
    torch_child = start_torch(shapes_by_workload)
    steps = {(w, name): mxnet_step(shapes, *MXNET_OPTIMIZERS[name])
             for w, shapes in shapes_by_workload.items() for name in MXNET_OPTIMIZERS}
    for w in shapes_by_workload:
        steps[w, 'myadam native'] = with_kernel(steps[w, 'myadam native'], native_kernel)
    for step in steps.values():  # warm-up: state creation, the kernel's threads
        step()
    times = {w: {} for w in shapes_by_workload}
    for _ in range(rounds):
        for (w, name), step in steps.items():
            start = time.perf_counter()
            step()
            times[w].setdefault(name, []).append((time.perf_counter() - start) * 1e3)
            if torch_child and name == 'myadam':
                for torch_name, threads in TORCH_THREADS.items():
                    torch_child.stdin.write(f'{w} {threads}\n')
                    torch_child.stdin.flush()
                    times[w].setdefault(torch_name, []).append(
                        float(torch_child.stdout.readline()))
    if torch_child:
        torch_child.stdin.close()
        torch_child.wait()
    return times


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
        mxnet_step([(16,)], optimizer, options)()
    step = mxnet_step([(size,)], optimizer, options)
    before, anon_before = _reset_peak_mb(), _status_mb('RssAnon')
    step()
    first_peak = _peak_mb()
    after_first = _reset_peak_mb()
    for _ in range(steps - 1):
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
    step = mxnet_step([(1000,)], 'myadam', {})
    start = time.perf_counter()
    step()
    print(time.perf_counter() - start)


def measure_first_step():
    """Seconds for a fresh process's first 'myadam' step."""
    result = subprocess.run([sys.executable, __file__, '--first-step-child'],
                            check=True, capture_output=True, text=True)
    return float(result.stdout.strip().splitlines()[-1])


# --- the storage modes: one case each, 'myadam' against 'adam' -----------------------------

CASE_OPTIONS = {'myadam': ('myadam', {'epsilon_mode': 'hat'}), 'adam': ('adam', {})}


def zipf_batches(vocab, ids, seed=0):
    """Batches of ``ids`` token ids below ``vocab``, Zipf-distributed (a=1.2), one at a
    time without end: a few rows recur in every batch, most are rare, as in text. (Made
    ahead, a million of them took 4 GB and a minute per contender.)"""
    import numpy as np
    rng = np.random.default_rng(seed)
    while True:
        yield (rng.zipf(1.2, size=ids) - 1) % vocab


def embedding_case(layer, tiny):
    """A Trainer stepping one embedding of 100000 x 128 (tiny: 1000 x 8), 512 ids a step.

    ``layer(vocab, dim)`` makes the block. The gradient of each step comes from a
    forward and backward pass on the next batch of ids, outside the timing.
    """
    vocab, dim, ids = (1000, 8, 16) if tiny else (100_000, 128, 512)

    def make(optimizer, options):
        import mxnet as mx
        from mxnet import autograd, gluon
        import adam_plugin  # noqa: F401  (registers 'myadam')
        mx.random.seed(0)
        net = layer(vocab, dim)
        net.initialize(mx.init.Normal())
        trainer = gluon.Trainer(net.collect_params(), optimizer,
                                dict(options, learning_rate=1e-3))
        batches = zipf_batches(vocab, ids)

        def prepare():
            with autograd.record():
                loss = net(mx.nd.array(next(batches))).sum()
            loss.backward()
            mx.nd.waitall()

        def step():
            trainer.step(ids)
            mx.nd.waitall()
        return prepare, step
    return make


def float16_updater_case(tiny):
    """float16 weights with ``multi_precision=True``, ResNet-18's shapes (tiny: two), one
    call of MXNet's Updater over all of them, as ``Trainer.step`` makes it; fixed
    random gradients."""
    shapes = [(4, 3, 3, 3), (4,)] if tiny else resnet18_shapes()

    def make(optimizer, options):
        import mxnet as mx
        import adam_plugin  # noqa: F401  (registers 'myadam')
        mx.random.seed(0)
        weights = [mx.nd.random.normal(shape=s).astype('float16') for s in shapes]
        grads = [mx.nd.random.normal(shape=s, scale=0.01).astype('float16') for s in shapes]
        updater = mx.optimizer.get_updater(mx.optimizer.create(
            optimizer, learning_rate=1e-3, multi_precision=True, **options))
        indices = list(range(len(shapes)))
        mx.nd.waitall()

        def step():
            updater(indices, grads, weights)
            mx.nd.waitall()
        return (lambda: None), step
    return make


def kvstore_case(shapes):
    """``update_on_kvstore=True`` on two CPU contexts over parameters of ``shapes(tiny)``:
    the KVStore calls the optimizer once per parameter; fixed gradients."""
    def maker(tiny):
        def make(optimizer, options):
            import mxnet as mx
            from mxnet import gluon
            import adam_plugin  # noqa: F401  (registers 'myadam')
            mx.random.seed(0)
            contexts = [mx.cpu(0), mx.cpu(1)]
            params = [gluon.Parameter(f'p{i}', shape=shape) for i, shape in enumerate(shapes(tiny))]
            for p in params:
                p.initialize(mx.init.Normal(), ctx=contexts)
            trainer = gluon.Trainer(params, optimizer, dict(options, learning_rate=1e-3),
                                    update_on_kvstore=True)
            for p in params:
                for g in p.list_grad():
                    mx.nd.random.normal(shape=g.shape, scale=0.01, out=g)
            mx.nd.waitall()

            def prepare():
                for p in params:
                    for d in p.list_data():
                        d._fresh_grad = True  # as backward() would mark it

            def step():
                trainer.step(1)
                mx.nd.waitall()
            return prepare, step
        return make
    return maker


def _sparse_embedding(vocab, dim):
    from mxnet import gluon
    return gluon.contrib.nn.SparseEmbedding(vocab, dim)


def _embedding_sparse_grad(vocab, dim):
    from mxnet import gluon
    return gluon.nn.Embedding(vocab, dim, sparse_grad=True)


# name -> (what it is, its maker given tiny): make(optimizer, options) -> (prepare, step)
CASES = {
    'sparse_embedding': ('SparseEmbedding(100000, 128), 512 Zipf ids a step (row_sparse '
                         'weight, lazy, update_on_kvstore)',
                         lambda tiny: embedding_case(_sparse_embedding, tiny)),
    'embedding_sparse_grad': ('Embedding(100000, 128, sparse_grad=True), 512 Zipf ids a step '
                              '(dense weight, lazy)',
                              lambda tiny: embedding_case(_embedding_sparse_grad, tiny)),
    'float16_resnet18': ('float16 + multi_precision, ResNet-18 shapes, MXNet\'s Updater',
                         float16_updater_case),
    'kvstore_two_contexts': ('update_on_kvstore=True, two CPU contexts, 30 Dense(64)',
                             kvstore_case(lambda tiny: [(64, 64), (64,)] * (3 if tiny else 30))),
    'kvstore_resnet18': ('update_on_kvstore=True, two CPU contexts, ResNet-18 shapes',
                         kvstore_case(lambda tiny: [(4, 3, 3, 3), (4,)] if tiny
                                      else resnet18_shapes())),
}


def time_cases(names, rounds, tiny):
    """{case: {'myadam': [ms], 'adam': [ms]}}: per round, each contender's step in turn."""
    times = {}
    for name in names:
        make = CASES[name][1](tiny)
        contenders = {who: make(*CASE_OPTIONS[who]) for who in CASE_OPTIONS}
        for prepare, step in contenders.values():  # warm-up: states, the kernel's threads
            prepare()
            step()
        times[name] = {who: [] for who in contenders}
        for _ in range(rounds):
            for who, (prepare, step) in contenders.items():
                prepare()
                start = time.perf_counter()
                step()
                times[name][who].append((time.perf_counter() - start) * 1e3)
    return times


def report_cases(times):
    """Print and return {case: {'myadam_ms', 'adam_ms', 'ratio', 'rounds'}} (medians)."""
    rows = {}
    print(f"\n{'case':22} {'myadam ms':>10} {'adam ms':>10} {'ratio':>7}   what")
    for name, by_who in times.items():
        mine, theirs = (statistics.median(by_who[who]) for who in ('myadam', 'adam'))
        rows[name] = {'myadam_ms': mine, 'adam_ms': theirs, 'ratio': mine / theirs,
                      'rounds': len(by_who['myadam'])}
        print(f"{name:22} {mine:10.2f} {theirs:10.2f} {mine / theirs:7.2f}   {CASES[name][0]}")
    return rows


def report(times, memory, first_step, kernel):
    rows = {}
    print(f"{'workload':10} {'contender':20} {'median ms':>10} {'vs mxnet adam':>14}"
          f" {'vs torch fused':>15}")
    for w, by_name in times.items():
        base = statistics.median(by_name['mxnet adam'])
        torch_ms = statistics.median(by_name['torch fused']) if 'torch fused' in by_name else None
        for name, samples in by_name.items():
            ms = statistics.median(samples)
            rows.setdefault(w, {})[name] = {
                'median_ms': ms, 'ratio_to_mxnet_adam': ms / base,
                'ratio_to_torch_fused': ms / torch_ms if torch_ms else None, 'rounds': len(samples)}
            vs_torch = f"{ms / torch_ms:15.2f}" if torch_ms else f"{'-':>15}"
            print(f"{w:10} {name:20} {ms:10.2f} {ms / base:14.2f}{vs_torch}")
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
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--case-rounds', type=int, default=101,
                        help='rounds of each storage-mode case (default 101: most take well '
                             'under a millisecond a step; with 15 rounds a case\'s ratio '
                             'differed by up to a quarter between runs)')
    parser.add_argument('--tiny', action='store_true', help='tiny sizes (a smoke test)')
    parser.add_argument('--json', metavar='PATH',
                        help="also write the results as JSON ('-': stdout)")
    parser.add_argument('--case', action='append', choices=sorted(CASES), metavar='NAME',
                        help='run only this case of the storage modes (repeatable): '
                             + ', '.join(CASES))
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
    if args.case:
        results = {'threads': THREADS,
                   'cases': report_cases(time_cases(args.case, args.case_rounds, args.tiny))}
    else:
        results = full_run(args)
    if args.json == '-':
        print(json.dumps(results, indent=1))
    elif args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


def full_run(args):
    """Every part: the dense workloads, memory, compilation, the storage-mode cases."""
    from adam_plugin import kernel
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
    results = report(times, memory, first_step, variants)
    results['cases'] = report_cases(time_cases(list(CASES), args.case_rounds, args.tiny))
    return results


if __name__ == '__main__':
    main()
