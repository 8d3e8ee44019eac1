"""docs/speed.md's figures, written from the benchmarks' JSON results.

``make bench`` runs ``bench_step.py`` and ``bench_loops.py`` (each writes its JSON into
docs/), then this script, which rewrites every part of docs/speed.md that lies between
``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` from those two files. So the page's
figures are the last run's, and the machine, the date and the load they were measured
under are the run's own. ``--check`` changes nothing and fails if the page is not what the
JSON files give (tests/test_benchmark.py runs it).

    python benchmarks/tables.py            # rewrite docs/speed.md
    python benchmarks/tables.py --check
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, 'docs', 'speed.md')
STEP_JSON = os.path.join(ROOT, 'docs', 'bench_step.json')
LOOPS_JSON = os.path.join(ROOT, 'docs', 'bench_loops.json')

# bench_step.py's workloads, as the table names them.
WORKLOADS = {'1x10M': '1 tensor of 10M', '200x1K': '200 tensors of 1K',
             'resnet18': 'resnet18_v1 shapes (102 tensors, 11.7M)'}
# (column title, contender in bench_step.py), then the ratios.
STEP_COLUMNS = [
    ('MXNet `adam`', 'mxnet adam'), ('`myadam`', 'myadam'),
    ('`myadam` `fused=False`', 'myadam textbook'),
    ('torch `Adam(fused=True)`, {threads} threads', 'torch fused'),
    ('same, 1 thread', 'torch fused 1 thread'),
    ('torch fused + check, {threads} threads', 'torch fused+check'),
    ('same, 1 thread', 'torch fused+check 1 thread'),
    ("MXNet's `Trainer.step` alone (an optimizer that does nothing)", 'free step'),
]
STEP_RATIOS = [('`myadam` / MXNet `adam`', 'ratio_to_mxnet_adam'),
               ('`myadam` / torch fused, {threads} threads', 'ratio_to_torch_fused'),
               ('`myadam` / torch fused + check, {threads} threads',
                'ratio_to_torch_fused_check')]
# The last column: MXNet's Trainer.step alone against torch fused + check.
FREE_RATIO = ("`Trainer.step` alone / torch fused + check, {threads} threads", 'free step',
              'ratio_to_torch_fused_check')
# bench_loops.py's cases, as the tables name them.
STEP_CASES = {
    'sparse_embedding': '`SparseEmbedding(100000, 128)`, 512 Zipf ids a step (row_sparse '
                        'weight, lazy, `update_on_kvstore`)',
    'embedding_sparse_grad': '`Embedding(100000, 128, sparse_grad=True)`, 512 Zipf ids a step '
                             '(dense weight, lazy)',
    'kvstore_two_contexts': '`update_on_kvstore=True`, two CPU contexts, the 60 parameters of '
                            '30 `Dense(64)`: one call per parameter',
    'kvstore_resnet18': '`update_on_kvstore=True`, two CPU contexts, ResNet-18\'s shapes',
    'float16_resnet18': 'float16 with `multi_precision=True`, ResNet-18\'s shapes',
    'dense_resnet18': 'float32, ResNet-18\'s shapes',
}
MODELS = {
    'mlp': 'MLP: 3 x `Dense(1024, relu)` and `Dense(10)`, batch 64 of 784',
    'resnet18': 'model zoo `resnet18_v1(classes=10)`, batch 16 of 3x32x32',
    'lstm_lm': 'language model: `Embedding(50000, 128, sparse_grad=True)`, `LSTM(128)`, '
               '`Dense(50000)`, batch 8 x 20 tokens',
    'kvstore_mlp': '30 x `Dense(64)` on two CPU contexts, `update_on_kvstore=True`, '
                   'batch 2 x 32',
}


def _ms(value):
    return '–' if value is None else f'{value:.2f}'


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _table(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |',
             '| --- |' + ' ---: |' * (len(header) - 1)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)


def step_table(step):
    threads = step['threads']
    header = ['workload'] + [title.format(threads=threads) for title, _ in STEP_COLUMNS] + [
        title.format(threads=threads) for title, _ in STEP_RATIOS] + [
        FREE_RATIO[0].format(threads=threads)]
    rows = []
    for workload, title in WORKLOADS.items():
        by_name = step['timings'][workload]
        cells = [_ms(by_name[name]['median_ms']) if name in by_name else '–'
                 for _, name in STEP_COLUMNS]
        cells += [_ms(by_name['myadam'][key]) for _, key in STEP_RATIOS]
        free = by_name.get(FREE_RATIO[1])
        cells.append(_ms(free[FREE_RATIO[2]]) if free else '–')
        rows.append([title] + cells)
    return (f"Median of {by_name['myadam']['rounds']} interleaved rounds, milliseconds.\n\n"
            + _table(header, rows))


MEMORY = {'mxnet adam': 'MXNet `adam`', 'myadam': '`myadam`',
          'myadam textbook': '`myadam` `fused=False`'}
MEMORY_COLUMNS = [('peak RSS growth from before step 1', 'growth_mb'),
                  ('peak RSS growth after step 1', 'steady_growth_mb'),
                  ('anonymous memory growth from before step 1', 'anon_growth_mb'),
                  ('peak RSS growth from before step 1, optimizer code run first',
                   'growth_after_warm_up_mb')]


def step_notes(step):
    memory, first, kernel = step['memory'], step['first_step'], step['kernel']
    rows = [[title] + [f"{memory[name][key]:.1f}" for _, key in MEMORY_COLUMNS]
            for name, title in MEMORY.items()]
    native = ', '.join(f"{WORKLOADS[w]} {r:.2f}"
                       for w, r in kernel['installed_over_native'].items())
    return (f"Memory over {memory['steps']} steps on one tensor of {memory['size']:,} "
            "elements, a fresh process per optimizer (MiB; the two float32 moments of such a "
            f"tensor are {2 * 4 * memory['size'] / 2 ** 20:.1f} MiB):\n\n"
            + _table([''] + [title for title, _ in MEMORY_COLUMNS], rows) + "\n\n"
            f"First use: compiling the kernel (`setup.py build_ext`, what `pip install` does "
            f"once) took {first['build_s']:.1f} s (the native build {first['build_native_s']:.1f} "
            f"s), and the first `myadam` step of a fresh process "
            f"{first['first_step_s'] * 1e3:.1f} ms. The installed kernel ran its "
            f"`{kernel['installed_variant']}` variant (compiled: "
            f"{', '.join(kernel['installed_variants'])}); its median step over the native "
            f"build's (`ADAM_PLUGIN_NATIVE=1`) in the same rounds: {native}.")


def loop_steps_table(loops):
    rows = []
    for name, title in STEP_CASES.items():
        row = loops['steps'].get(name)
        if row is None:
            rows.append([f'{title} (`{name}`)'] + ['–'] * 6)
            continue
        rows.append([f'{title} (`{name}`)', _ms(_median(row['myadam_ms'])),
                     _ms(_median(row['adam_ms'])), _ms(row['ratio']),
                     ' '.join(f'{r:.2f}' for r in row['ratios']),
                     _ms(_median(row['free_ms']) if 'free_ms' in row else None),
                     _ms(row.get('if_step_free'))])
    rounds = {row['rounds'] for row in loops['steps'].values()}
    return (f"{_rounds(rounds, loops['runs'])}, milliseconds:\n\n"
            + _table(['case', '`myadam`', 'MXNet `adam`', 'ratio', 'the runs',
                      'a step that does nothing', 'with a free step'], rows))


def loop_models_table(loops):
    rows = []
    for name, title in MODELS.items():
        row = loops['models'].get(name)
        if row is None:
            rows.append([f'{title} (`{name}`)'] + ['–'] * 8)
            continue
        rows.append([f'{title} (`{name}`)', _ms(row['myadam_iteration_ms']),
                     _ms(row['adam_iteration_ms']), _ms(row['ratio']),
                     ' '.join(f'{r:.2f}' for r in row['ratios']), _ms(row['step_ratio']),
                     f"{row['myadam_step_share']:.0%}", f"{row['adam_step_share']:.0%}",
                     _ms(row['if_step_free'])])
    rounds = {row['rounds'] for row in loops['models'].values()}
    beyond = [f"`{name}` ({row['if_step_free']:.2f})" for name, row in loops['models'].items()
              if row['if_step_free'] > TARGET]
    return (f"{_rounds(rounds, loops['runs'])}, milliseconds:\n\n"
            + _table(['model', '`myadam`', 'MXNet `adam`', 'ratio', 'the runs',
                      'step, `myadam` / `adam`', 'step\'s share, `myadam`',
                      'step\'s share, `adam`', 'with a free step'], rows)
            + (f"\n\nWith a step that took no time at all, a whole iteration would still take "
               f"more than {TARGET} of MXNet `adam`'s on {', '.join(beyond)}: there the "
               "forward and backward pass alone is that large a part of the iteration."
               if beyond else ""))


TARGET = 0.9  # the goal for a whole iteration's time, as a fraction of MXNet's Adam's


def _rounds(rounds, runs):
    return (f"{' or '.join(map(str, sorted(rounds)))} rounds a run, {runs} "
            f"run{'s' if runs != 1 else ''}")


def _machine(run, what):
    m = run['machine']
    torch = f", torch {m['torch']}" if m.get('torch') else ''
    return (f"- {what}: {m['date']}, {m['cores']} cores, CPU \"{m['cpu']}\", Python "
            f"{m['python']}, MXNet {m['mxnet']}{torch}, {m['compiler']}; "
            f"{run['threads']} threads for MXNet, the kernel and torch; load average "
            f"{m['load_before']:.2f} before and {run['load_after']:.2f} after the run.")


def machine(step, loops):
    return '\n'.join([_machine(step, '`bench_step.py`'), _machine(loops, '`bench_loops.py`')])


SECTIONS = {
    'step-table': lambda step, loops: step_table(step),
    'step-notes': lambda step, loops: step_notes(step),
    'loop-steps': lambda step, loops: loop_steps_table(loops),
    'loop-models': lambda step, loops: loop_models_table(loops),
    'machine': machine,
}


def render(text, step, loops):
    """``text`` (the page) with each generated section written anew."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf'(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)',
                             re.S)
        if not pattern.search(text):
            raise ValueError(f"docs/speed.md has no section {name!r}")
        text = pattern.sub(rf'\g<1>{_escaped(make(step, loops))}\n\g<2>', text)
    return text


def _escaped(body):
    """``body`` as a replacement string of :func:`re.sub` writes it."""
    return body.replace('\\', '\\\\')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true',
                        help='fail, changing nothing, if docs/speed.md is not up to date')
    args = parser.parse_args(argv)
    with open(STEP_JSON) as f:
        step = json.load(f)
    with open(LOOPS_JSON) as f:
        loops = json.load(f)
    with open(PAGE) as f:
        text = f.read()
    new = render(text, step, loops)
    if args.check:
        if new != text:
            print("docs/speed.md is not what docs/bench_step.json and docs/bench_loops.json "
                  "give: run python benchmarks/tables.py", file=sys.stderr)
            return 1
        return 0
    with open(PAGE, 'w') as f:
        f.write(new)
    return 0


if __name__ == '__main__':
    sys.exit(main())
