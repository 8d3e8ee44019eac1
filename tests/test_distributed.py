"""dist_sync training with 'myadam' through ``python -m adam_plugin.scaleout.launch``, on loopback.

Each job is two workers training the linreg task on their halves of every global
batch (``tests/dist_worker.py``, a plain script); the reference is one process on
the same batches. Failing jobs must end, every time: each failure is run RUNS times.
"""
import concurrent.futures
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

import dist_worker
import launching
from adam_plugin.chapter import linreg
from adam_plugin.scaleout import launch as launch_module

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
    'a server cannot unpickle the optimizer': (
        {'update_on_kvstore': True, 'optimizer': 'unpicklable'},
        ["Can't get attribute 'Unpicklable'", 'server 0 exited with status 1']),
    'the optimizer raises on a server': (
        {'update_on_kvstore': True, 'poison': True, 'optimizer_params': {'nonfinite': 'raise'}},
        ['FloatingPointError: myadam: the gradient of', 'server 0 exited with status 1']),
}


@pytest.mark.parametrize('name', FAILURES)
@pytest.mark.slow
def test_failures_on_a_server_are_loud(name):
    config, messages = FAILURES[name]
    status, params, output = launch(config)
    assert status != 0
    assert params == {}, 'a worker finished training and reported weights'
    for message in messages:
        assert message in output


# --- failing jobs end: each failure 20 times ------------------------------------------------

# Runs per failure: 20 for the criterion (`make failfast`); `make test` runs 5 of each
# to keep the suite within its time (about 5 s of CPU a job on the 2-core machine).
RUNS = int(os.environ.get('ADAM_PLUGIN_FAILFAST_RUNS', '20'))
PARALLEL = 2      # jobs at a time: one job alone leaves the two cores idle at times
# The repeated jobs start the launcher's file as a script: the same code as ``python -m
# adam_plugin.scaleout.launch`` (tests/test_launch.py runs that), minus the import of the
# package, and so of MXNet (about 2.4 s of CPU), which the launcher itself never uses.
LAUNCHER = launch_module.__file__
BOUND = 15        # seconds from the failure to the end of the whole job (the bound)
JOB_TIMEOUT = 60  # the launcher's own --timeout: a job that hangs ends with 124 and fails

FAIL_FAST = {
    # name: (worker config, the output line that marks the failure, job status, what the
    #        output must say, workers). The failing worker's script catches nothing. A
    #        killed server or scheduler needs no second worker to wait on it.
    'a worker raises': (
        {'num_epochs': 3, 'fail': {'rank': 1, 'step': 10, 'how': 'raise'}},
        '[worker 1] failing: raise', 1,
        ['RuntimeError: worker 1 fails at step 10', 'worker 1 exited with status 1; ending'], 2),
    'update_on_kvstore=False is refused': (
        {'update_on_kvstore': False},
        'RuntimeError: myadam: refusing to update on a distributed-KVStore worker', 1,
        ['Create the Trainer with update_on_kvstore=True', 'exited with status 1; ending'], 2),
    'a server is killed': (
        {'num_epochs': 3, 'fail': {'rank': 0, 'step': 10, 'how': 'kill server'}},
        '[worker 0] failing: kill server', 137,
        ['server 0 exited with status 137; ending the job'], 1),
    'the scheduler is killed': (
        {'num_epochs': 3, 'fail': {'rank': 0, 'step': 10, 'how': 'kill scheduler'}},
        '[worker 0] failing: kill scheduler', 137,
        ['scheduler exited with status 137; ending the job'], 1),
}


def timed_job(config, marker, workers):
    """Run one job of ``workers`` workers; return ``(status, output, seconds to the failure,
    seconds from the failure to the job's end or None, processes left behind)``."""
    token = f'adam-plugin-test-{uuid.uuid4()}'
    proc = subprocess.Popen(
        [sys.executable, LAUNCHER, '-n', str(workers), '--timeout',
         str(JOB_TIMEOUT), '--', sys.executable, WORKER, json.dumps(config)],
        env=dict(os.environ, ADAM_PLUGIN_TEST_TOKEN=token),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fence = threading.Timer(LIMIT, proc.terminate)  # should the launcher itself hang
    fence.start()
    started, failed, lines = time.monotonic(), None, []
    for line in proc.stdout:
        lines.append(line)
        if failed is None and marker in line:
            failed = time.monotonic()
    status = proc.wait()
    ended = time.monotonic()
    fence.cancel()
    return (status, ''.join(lines), None if failed is None else failed - started,
            None if failed is None else ended - failed, launching.orphans(token))


@pytest.mark.parametrize('name', FAIL_FAST)
@pytest.mark.slow
def test_a_failing_job_ends_every_time(name):
    config, marker, want_status, messages, workers = FAIL_FAST[name]
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        runs = list(pool.map(lambda _: timed_job(config, marker, workers), range(RUNS)))
    report, problems = [], []
    for i, (status, output, to_failure, to_end, left) in enumerate(runs):
        report.append(f'run {i:2}: status {status}, failed after {to_failure or 0:.1f} s, '
                      f'job ended {to_end or 0:.1f} s later')
        missing = [m for m in [marker] + messages if m not in output]
        if status != want_status or missing or not to_end <= BOUND or left:
            problems.append(f'run {i}: status {status} (want {want_status}), missing {missing}, '
                            f'left behind {left}\n{output}')
    print(f'{name}:', *report, sep='\n  ')
    assert not problems, '\n'.join(report + problems)


# --- which processes refuse, and when the hook is installed ---------------------------------

def trainer_and_weight():
    """A real Trainer over one Parameter (no KVStore yet), and that parameter."""
    w = gluon.Parameter('w', shape=(2,))
    w.initialize(init=mx.init.One())
    return gluon.Trainer([w], 'myadam', {'learning_rate': 0.1}), w


def mark_distributed(trainer):
    """What ``Trainer._init_kvstore`` records when its KVStore's type holds 'dist'."""
    trainer._distributed = True


@pytest.fixture
def excepthook(monkeypatch):
    """Restore ``sys.excepthook`` after the test; yield the original."""
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)
    yield sys.excepthook


def test_the_refusal_comes_before_anything_changes(excepthook):
    trainer, w = trainer_and_weight()
    opt, weight = trainer.optimizer, w.data()
    state = opt.create_state(0, weight)
    opt.update(0, weight, mx.nd.array([0.5, -0.5]), state)
    arrays = (weight, *state[:-1])  # the state: (m, v, [t])
    before = [a.asnumpy().copy() for a in arrays], dict(opt._index_update_count)
    mark_distributed(trainer)
    with pytest.raises(RuntimeError, match='update_on_kvstore=False'):
        opt.update(0, weight, mx.nd.array([0.5, -0.5]), state)
    after = [a.asnumpy() for a in arrays], dict(opt._index_update_count)
    for old, new in zip(before[0], after[0], strict=True):
        np.testing.assert_array_equal(old, new)
    assert before[1] == after[1] == {0: 1} and state[-1] == [1]
    assert sys.excepthook is not excepthook and sys.excepthook.adam_plugin_exits


@pytest.mark.parametrize('ctxs, update_on_kvstore', [
    ([mx.cpu()], None),                       # no KVStore at all
    ([mx.cpu(0), mx.cpu(1)], False),          # a local KVStore, the update on the Trainer
])
def test_a_local_trainer_is_not_refused_under_a_leftover_dmlc_role(
        monkeypatch, excepthook, tmp_path, ctxs, update_on_kvstore):
    monkeypatch.setenv('DMLC_ROLE', 'worker')
    features, labels = linreg.make_dataset(num_examples=16, seed=1)
    result = linreg.train_trainer(features, labels, batch_size=8, num_epochs=2, ctx=ctxs,
                                  update_on_kvstore=update_on_kvstore)
    assert result.trainer._distributed is False
    assert result.trainer.optimizer._index_update_count == {0: 4, 1: 4}
    result.trainer.save_states(str(tmp_path / 'states'))  # pickles MyAdam: no hook here
    assert sys.excepthook is excepthook


def test_pickling_for_a_distributed_trainer_installs_the_hook(excepthook):
    trainer, _ = trainer_and_weight()
    pickle.dumps(trainer.optimizer)
    assert sys.excepthook is excepthook
    mark_distributed(trainer)
    pickle.dumps(trainer.optimizer)  # what KVStore.set_optimizer does on a dist worker
    assert sys.excepthook.adam_plugin_exits


UNCAUGHT = """\
import atexit, sys
from adam_plugin.distributed import exit_on_uncaught_exception
atexit.register(print, 'atexit ran')
exit_on_uncaught_exception()
exit_on_uncaught_exception()
sys.stdout.write('written, not yet flushed')
raise ValueError('uncaught')
"""


def test_exit_on_uncaught_exception_flushes_reports_and_exits_1():
    done = subprocess.run([sys.executable, '-c', UNCAUGHT], capture_output=True, text=True,
                          timeout=LIMIT)
    assert done.returncode == 1
    assert done.stdout == 'written, not yet flushed'  # and no 'atexit ran': shutdown skipped
    assert done.stderr.count('Traceback (most recent call last)') == 1
    assert done.stderr.endswith('ValueError: uncaught\n')
