"""benchmarks/bench_step.py still runs: every part of it, on tiny sizes (timings not checked)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'benchmarks', 'bench_step.py')


@pytest.mark.slow
def test_bench_step_runs_on_tiny_sizes(tmp_path):
    out = tmp_path / 'bench.json'
    subprocess.run([sys.executable, BENCH, '--tiny', '--rounds', '2', '--case-rounds', '3',
                    '--json', str(out)], check=True, capture_output=True, text=True)
    results = json.loads(out.read_text())
    contenders = {'mxnet adam', 'myadam', 'myadam native', 'myadam textbook'}
    if importlib.util.find_spec('torch'):
        contenders |= {'torch fused', 'torch fused 1 thread'}
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
    assert set(results['cases']) == {'sparse_embedding', 'embedding_sparse_grad',
                                      'float16_resnet18', 'kvstore_two_contexts',
                                      'kvstore_resnet18'}
    for row in results['cases'].values():
        assert row['rounds'] == 3 and row['myadam_ms'] > 0 and row['adam_ms'] > 0
        assert row['ratio'] == row['myadam_ms'] / row['adam_ms']


@pytest.mark.slow
def test_one_case_runs_alone(tmp_path):
    """--case NAME runs that case only, nothing else of the benchmark."""
    out = tmp_path / 'bench.json'
    subprocess.run([sys.executable, BENCH, '--tiny', '--case-rounds', '2', '--case',
                    'embedding_sparse_grad', '--json', str(out)],
                   check=True, capture_output=True, text=True)
    results = json.loads(out.read_text())
    assert set(results) == {'threads', 'cases'}
    assert set(results['cases']) == {'embedding_sparse_grad'}
