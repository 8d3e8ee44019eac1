"""The benchmarks still run: every part of them, on tiny sizes (timings not checked)."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'benchmarks', 'bench_step.py')
LOOPS = os.path.join(ROOT, 'benchmarks', 'bench_loops.py')
WHERE = os.path.join(ROOT, 'benchmarks', 'where_time_goes.py')


@pytest.mark.slow
def test_bench_step_runs_on_tiny_sizes(tmp_path):
    out = tmp_path / 'bench.json'
    subprocess.run([sys.executable, BENCH, '--tiny', '--rounds', '2', '--json', str(out)],
                   check=True, capture_output=True, text=True)
    results = json.loads(out.read_text())
    contenders = {'mxnet adam', 'myadam', 'myadam native', 'myadam textbook', 'free step'}
    if importlib.util.find_spec('torch'):
        contenders |= {'torch fused', 'torch fused 1 thread', 'torch fused+check',
                       'torch fused+check 1 thread'}
    assert set(results['timings']) == {'1x10M', '200x1K', 'resnet18'}
    for by_name in results['timings'].values():
        assert set(by_name) == contenders
        for row in by_name.values():
            assert row['rounds'] == 2 and row['median_ms'] > 0
    for name in ('mxnet adam', 'myadam', 'myadam textbook'):
        memory = results['memory'][name]
        assert memory['growth_mb'] >= memory['steady_growth_mb']
        assert memory['growth_after_warm_up_mb'] >= 0
    assert all(results['first_step'][key] > 0 for key in ('build_s', 'build_native_s', 'first_step_s'))
    kernel = results['kernel']
    assert kernel['installed_variant'] in kernel['installed_variants']
    assert kernel['native_variants'] == ['native']
    assert set(kernel['installed_over_native']) == set(results['timings'])
    torch_ratios = ('ratio_to_torch_fused', 'ratio_to_torch_fused_check')
    for row in (r for by_name in results['timings'].values() for r in by_name.values()):
        assert row['ratio_to_mxnet_adam'] > 0
        assert all((row[key] is None) == (not importlib.util.find_spec('torch'))
                   for key in torch_ratios)


@pytest.mark.slow
def test_bench_loops_quick(tmp_path):
    """Every storage-mode case and model of the real-loop benchmark runs (--quick: tiny
    sizes, 2 rounds, 1 run), and its table holds each one's ratio of 'myadam' to 'adam'."""
    out = tmp_path / 'loops.json'
    subprocess.run([sys.executable, LOOPS, '--quick', '--json', str(out)],
                   check=True, capture_output=True, text=True)
    results = json.loads(out.read_text())
    assert set(results['steps']) == {'sparse_embedding', 'embedding_sparse_grad',
                                      'kvstore_two_contexts', 'kvstore_resnet18',
                                      'float16_resnet18', 'dense_resnet18'}
    assert set(results['models']) == {'mlp', 'resnet18', 'lstm_lm', 'kvstore_mlp'}
    assert results['runs'] == 1
    for row in results['steps'].values():
        assert row['rounds'] == 2 and len(row['ratios']) == 1
        assert row['ratio'] == row['myadam_ms'][0] / row['adam_ms'][0]
        assert row['if_step_free'] == row['free_ms'][0] / row['adam_ms'][0] > 0
    for row in results['models'].values():
        assert row['rounds'] == 2
        assert row['ratio'] == row['myadam_iteration_ms'] / row['adam_iteration_ms']
        for who in ('myadam', 'adam'):
            share = row[f'{who}_step_share']
            assert 0 < share < 1
            assert share == row[f'{who}_step_ms'] / (row[f'{who}_forward_backward_ms']
                                                      + row[f'{who}_step_ms'])


@pytest.mark.slow
def test_bench_loops_runs_one_case_alone(tmp_path):
    """--case NAME runs that case only."""
    out = tmp_path / 'loops.json'
    subprocess.run([sys.executable, LOOPS, '--quick', '--case', 'embedding_sparse_grad',
                    '--json', str(out)], check=True, capture_output=True, text=True)
    results = json.loads(out.read_text())
    assert set(results['steps']) == {'embedding_sparse_grad'} and results['models'] == {}


@pytest.mark.slow
@pytest.mark.parametrize('case', ['sparse_embedding', 'kvstore_two_contexts'])
def test_where_time_goes_names_the_parts_a_step_ran(case):
    """benchmarks/where_time_goes.py times the parts of a real loop's step: the sparse
    step's rows and kernel call (with --twice, a second call timed apart), the KVStore's
    queued calls, one per parameter."""
    done = subprocess.run([sys.executable, WHERE, case, '--quick', '--steps', '3', '--twice'],
                          check=True, capture_output=True, text=True)
    lines = [re.fullmatch(r' +(.+?) +([0-9.]+) +\(([0-9.]+) calls\)', line)
             for line in done.stdout.splitlines()[1:]]
    parts = {m[1]: (float(m[2]), float(m[3])) for m in lines}  # name -> (us, calls) a step
    assert parts['Trainer.step'][0] > 0 and parts['Trainer.step'][1] == 1
    if case == 'sparse_embedding':
        assert {'sparse_rows', 'HandleTable.checked_steps',
                'HandleTable.checked_steps again'} <= set(parts)
    else:  # 3 Dense layers, 6 parameters, a call each; queued once planned
        assert parts['EngineQueue.queue'][1] == 6 and 'HandleTable.queue' in parts


@pytest.mark.slow
def test_where_time_goes_counts_the_bytecodes_a_step_runs():
    """With --opcodes the Python bytecodes of a step are counted for each contender and
    per function for myadam: the KVStore's one-parameter calls each go through the
    package's queue, and MXNet's Adam runs more Python than a step that does nothing."""
    done = subprocess.run([sys.executable, WHERE, 'kvstore_two_contexts', '--quick', '--opcodes',
                           '--steps', '1', '--top', '1000'], check=True, capture_output=True,
                          text=True)
    first, own, _, *rows = done.stdout.splitlines()
    totals = dict(re.findall(r'(\w+) ([0-9]+)', first.split(': ', 1)[1]))
    assert set(totals) == {'myadam', 'adam', 'free'}
    assert int(totals['adam']) > int(totals['free']) > 0
    package = int(re.fullmatch(r"myadam's, in adam_plugin: ([0-9]+)", own)[1])
    functions = {m[1]: (int(m[2]), float(m[3])) for m in (
        re.fullmatch(r' +(.+?) +([0-9]+) +\(([0-9.]+) calls\)', row) for row in rows)}
    assert package == sum(n for name, (n, _) in functions.items()
                          if name.startswith('adam_plugin'))
    assert 0 < package < int(totals['myadam'])
    assert functions['adam_plugin/engine.py:queue'][1] == 6  # 3 Dense layers, 6 parameters


@pytest.mark.slow
def test_where_time_goes_times_the_step_without_its_check():
    """With --unchecked every other step runs the kernel's step without its check for
    NaN/Inf (HandleTable.adam_steps), the others its checked step, and both are given."""
    done = subprocess.run([sys.executable, WHERE, 'dense_resnet18', '--quick', '--steps', '4',
                           '--unchecked'], check=True, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    parts = {m[1]: float(m[2]) for m in (
        re.fullmatch(r' +(.+?) +[0-9.]+ +\(([0-9.]+) calls\)', line) for line in lines[1:-1])}
    assert parts['HandleTable.adam_steps'] == parts['HandleTable.checked_steps'] == 0.5
    assert re.fullmatch(r"the kernel's call, in turns: with its check [0-9.]+, without "
                        r"[0-9.]+ microseconds", lines[-1])


def test_speed_page_is_what_the_benchmarks_json_gives():
    """docs/speed.md's figures are benchmarks/tables.py's rendering of the committed JSON
    results (make bench writes both): no figure copied by hand, none left stale."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'tables.py'),
                           '--check'], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_turns_shuffle_who_follows_whom():
    """bench_step.turns: every round a permutation of the contenders, the same ones for the
    same seed, and over the rounds no contender always follows the same other one (what a
    step leaves behind, a cache it filled, falls on all alike)."""
    sys.path.insert(0, os.path.dirname(BENCH))
    try:
        import bench_step
    finally:
        sys.path.remove(os.path.dirname(BENCH))
    items = list(range(5))
    orders = list(bench_step.turns(items, 200, seed=3))
    assert all(sorted(order) == items for order in orders)
    assert orders == list(bench_step.turns(items, 200, seed=3))
    assert orders != list(bench_step.turns(items, 200, seed=4))
    follows = {}  # (before, after) -> rounds
    for order in orders:
        for before, after in zip(order[:-1], order[1:], strict=True):
            follows[before, after] = follows.get((before, after), 0) + 1
    # 200 rounds: each of the 20 ordered pairs is adjacent in 40 of them on average
    assert len(follows) == 20 and min(follows.values()) >= 20
    assert min(sum(order[0] == item for order in orders) for item in items) >= 20
