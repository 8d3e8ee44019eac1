"""dist_sync training with 'myadam' through ``python -m adam_plugin.scaleout.launch``, on loopback.

Each job is two workers training the linreg task on their halves of every global
batch (``tests/dist_worker.py``); the reference is one process on the same batches.
"""
import json
import os
import sys

import numpy as np
import pytest
import mxnet as mx

import dist_worker
import launching
from adam_plugin import MyAdam
from adam_plugin.chapter import linreg

WORKER = os.path.join(os.path.dirname(__file__), 'dist_worker.py')
LIMIT = 90  # seconds for any job, launcher included


def launch(config, workers=2, servers=1):
    """Run a job; return ``(status, {rank: params}, stdout + stderr)``."""
    status, out, err = launching.finish(launching.start(
        ['-n', str(workers), '-s', str(servers), '--timeout', str(LIMIT - 30), '--',
         sys.executable, WORKER, json.dumps(config)]), LIMIT)
    params = {}
    for line in out.splitlines():
        prefix, _, rest = line.partition('] ')
        if rest.startswith('{'):
            report = json.loads(rest)
            assert prefix == f"[worker {report['rank']}"
            params[report['rank']] = [float.fromhex(x) for x in report['params']]
    return status, params, out + err


@pytest.mark.parametrize('servers', [1, 2])
@pytest.mark.slow
def test_update_on_kvstore_equals_one_process(servers):
    config = {'update_on_kvstore': True}
    status, params, output = launch(config, servers=servers)
    assert status == 0, output
    assert sorted(params) == [0, 1]
    first, second = params.values()
    assert first == second, 'the workers ended with different weights'
    want = dist_worker.run({})  # one process, no KVStore
    assert not np.allclose(want, np.append(*linreg.init_params(dist_worker.TRAIN['seed'])))
    np.testing.assert_allclose(np.float32(first), want, rtol=0, atol=1e-5)


FAILURES = {
    # name: (worker config, what the output must say)
    'update_on_kvstore=False is refused': (
        {'update_on_kvstore': False},
        ['RuntimeError: myadam: refusing to update on a distributed-KVStore worker',
         'update_on_kvstore=True']),
    'a server cannot unpickle the optimizer': (
        {'update_on_kvstore': True, 'optimizer': 'unpicklable'},
        ["Can't get attribute 'Unpicklable'", 'server 0 exited with status 1']),
    'the optimizer raises on a server': (
        {'update_on_kvstore': True, 'poison': True, 'optimizer_params': {'nonfinite': 'raise'}},
        ['FloatingPointError: myadam: the gradient of', 'server 0 exited with status 1']),
}


@pytest.mark.parametrize('name', FAILURES)
@pytest.mark.slow
def test_failures_are_loud(name):
    config, messages = FAILURES[name]
    status, params, output = launch(config)
    assert status != 0
    assert params == {}, 'a worker finished training and reported weights'
    for message in messages:
        assert message in output


def test_the_refusal_comes_before_anything_changes(monkeypatch):
    opt = MyAdam(learning_rate=0.1)
    weight = mx.nd.array([1.0, 2.0])
    state = opt.create_state(0, weight)
    opt.update(0, weight, mx.nd.array([0.5, -0.5]), state)
    before = [a.asnumpy().copy() for a in (weight, *state)], dict(opt._index_update_count)
    monkeypatch.setenv('DMLC_ROLE', 'worker')
    with pytest.raises(RuntimeError, match='update_on_kvstore=False'):
        opt.update(0, weight, mx.nd.array([0.5, -0.5]), state)
    after = [a.asnumpy() for a in (weight, *state)], dict(opt._index_update_count)
    for old, new in zip(before[0], after[0]):
        np.testing.assert_array_equal(old, new)
    assert before[1] == after[1] == {0: 1}
