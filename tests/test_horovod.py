"""'myadam' under Horovod: real two-rank jobs launched by ``horovodrun --gloo`` on this host.

Two jobs in all (each rank pays MXNet's import): ``tests/hvd_worker.py`` trains
every option row in one job, which also puts a NaN on one rank and saves a
checkpoint; a second job resumes from that checkpoint and then meets a NaN under
``nonfinite='raise'``. The reference is one process with a plain
``gluon.Trainer`` fed the same global batches.
"""
import json
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest

import hvd_worker
import launching

# Two horovodrun jobs, made once by the module's fixture: one xdist worker runs them all.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('horovod')]

HOROVODRUN = os.path.join(os.path.dirname(sys.executable), 'horovodrun')
WORKER = os.path.join(os.path.dirname(__file__), 'hvd_worker.py')
LIMIT = 120  # seconds for any job; a hang fails the test instead of hanging the suite
ATOL = 1e-6  # float32 parameters after 60 steps, against one process (summation order differs)


def horovodrun(out, *tasks, **env):
    """Run ``hvd_worker.py OUT TASKS`` on two ranks; return ``(status, output, {rank: results})``."""
    token = f'adam-plugin-test-{uuid.uuid4()}'
    proc = subprocess.Popen(
        [HOROVODRUN, '--gloo', '-np', '2', '-H', 'localhost:2', sys.executable, WORKER,
         str(out), *tasks],
        # PYTHONPATH: the worker imports tests/configs.py; under PYTHONSAFEPATH=1 (make test)
        # Python does not put a script's own folder on sys.path.
        env=dict(os.environ, ADAM_PLUGIN_TEST_TOKEN=token, OMP_NUM_THREADS='1',
                 PYTHONPATH=os.path.dirname(os.path.abspath(__file__)), **env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=LIMIT)
    finally:  # on the time limit, end horovodrun and every rank, then fail
        proc.kill()
        for pid in launching.survivors(token):
            os.kill(pid, signal.SIGKILL)
    results = {rank: json.loads((out / f'rank{rank}.json').read_text())
               for rank in (0, 1) if (out / f'rank{rank}.json').exists()}
    return proc.returncode, output, results


def params(result):
    return np.float32([float.fromhex(x) for x in result['params']])


@pytest.fixture(scope='module')
def jobs(tmp_path_factory):
    """The 'train' job, then a 'resume raise' job on its checkpoint: ``{'train': ..., 'resume
    raise': ...}``, each ``(status, output, {rank: results})``.

    ``DMLC_ROLE=worker`` is left in the environment, as from a shell that once ran a
    KVStore job: MyAdam must not take a Horovod rank for a KVStore worker.
    """
    first, second = tmp_path_factory.mktemp('train'), tmp_path_factory.mktemp('resume')
    done = {'train': horovodrun(first, 'train', DMLC_ROLE='worker')}
    status, output, _ = done['train']
    assert status == 0, output
    for name in ('net.params', 'trainer.states'):
        (first / name).rename(second / name)
    done['resume raise'] = horovodrun(second, 'resume', 'raise')
    return done


@pytest.fixture(scope='module')
def trained(jobs):
    status, output, results = jobs['train']
    assert status == 0, output
    assert sorted(results) == [0, 1]
    return results


@pytest.mark.parametrize('name', hvd_worker.ROWS)
def test_two_ranks_equal_one_process(trained, name):
    first, second = trained[0][name], trained[1][name]
    assert first == second, 'the ranks ended with different parameters'
    net, _ = hvd_worker.train(hvd_worker.ROWS[name], slice(0, hvd_worker.STEPS))
    want = hvd_worker.flat_params(net)
    start = hvd_worker.flat_params(hvd_worker.make_net(seed=0))
    assert np.abs(want - start).min() > 1e-3  # every parameter moved
    np.testing.assert_allclose(params(first), want, rtol=0, atol=ATOL)


def test_a_nan_on_one_rank_is_skipped_on_every_rank(trained):
    first, second = trained[0]['skip'], trained[1]['skip']
    assert first == second, 'the ranks ended with different parameters'
    with pytest.warns(RuntimeWarning, match='skipped the update'):
        net, trainer = hvd_worker.train({}, slice(0, hvd_worker.STEPS), poison=True)
    assert trainer.optimizer.num_skipped == 4  # the NaN reaches all four parameters
    assert first['num_skipped'] == second['num_skipped'] == 4
    np.testing.assert_allclose(params(first), hvd_worker.flat_params(net), rtol=0, atol=ATOL)
    assert np.isfinite(params(first)).all()


def test_resuming_from_rank_0s_checkpoint_is_bitwise_uninterrupted(jobs, trained):
    status, output, resumed = jobs['resume raise']
    assert sorted(resumed) == [0, 1], output
    for rank in (0, 1):
        assert resumed[rank]['resumed'] == trained[rank]['uninterrupted'], f'rank {rank}'
    assert trained[0]['uninterrupted'] == trained[1]['uninterrupted']


def test_nonfinite_raise_ends_the_job(jobs):
    status, output, _ = jobs['resume raise']
    assert status != 0
    for rank in (0, 1):  # the summed gradient holds the NaN on both ranks
        assert f'[{rank}]<stderr>:FloatingPointError: myadam: the gradient of' in output
