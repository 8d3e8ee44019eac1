"""``python -m adam_plugin.scaleout.launch``: exit statuses, output prefixes, and no orphans."""
import signal
import sys
import time
import uuid

import pytest

import launching

# Every subprocess here is bounded by this many seconds.
LIMIT = 90

# Worker programs. Each opens the dist KVStore (so the scheduler and servers see
# all workers arrive) and then behaves as its row says.
OPEN_KV = "import os, subprocess, sys, time; import mxnet as mx; kv = mx.kv.create('dist_sync'); "
GREET = OPEN_KV + "print('hello from rank', kv.rank, flush=True)"
# A grandchild in the worker's process group, then: rank 1 dies at once with
# status 3 (os._exit: a normal exit would wait in ps-lite's final barrier), rank 0 hangs.
ONE_FAILS = OPEN_KV + ("subprocess.Popen(['sleep', '300']); print('ready', flush=True); "
                       "os._exit(3) if kv.rank == 1 else time.sleep(300)")
HANG = OPEN_KV + "subprocess.Popen(['sleep', '300']); print('ready', flush=True); time.sleep(300)"


def start(args, token):
    """Start the launcher; every process it starts inherits ``ADAM_PLUGIN_TEST_TOKEN``."""
    return launching.start(args, ADAM_PLUGIN_TEST_TOKEN=token)


def finish(proc):
    return launching.finish(proc, LIMIT)


@pytest.fixture
def token():
    return f'adam-plugin-test-{uuid.uuid4()}'


@pytest.mark.parametrize('servers', [1, 2])
@pytest.mark.slow
def test_success_prefixes_every_line_with_the_workers_rank(token, servers):
    status, out, err = finish(start(['-n', '3', '-s', str(servers), '--timeout', '60',
                                     '--', sys.executable, '-c', GREET], token))
    assert status == 0, err
    assert sorted(out.splitlines()) == [f'[worker {r}] hello from rank {r}' for r in range(3)]
    launching.assert_no_orphans(token)


@pytest.mark.slow
def test_a_failing_worker_ends_the_job_with_its_status(token):
    status, out, err = finish(start(['-n', '2', '--timeout', '60', '--',
                                     sys.executable, '-c', ONE_FAILS], token))
    assert status == 3
    assert out.count('] ready') == 2
    assert 'exited with status 3; ending the job' in err
    launching.assert_no_orphans(token)


@pytest.mark.slow
def test_timeout_ends_the_job_with_124(token):
    status, out, err = finish(start(['-n', '2', '--timeout', '8', '--',
                                     sys.executable, '-c', HANG], token))
    assert status == 124
    assert 'timed out after 8 s' in err
    launching.assert_no_orphans(token)


@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow
def test_interrupt_ends_the_job(token, signum, status):
    proc = start(['-n', '2', '--timeout', str(3 * LIMIT), '--', sys.executable, '-c', HANG],
                 token)
    ready = 0
    deadline = time.monotonic() + LIMIT
    while ready < 2 and time.monotonic() < deadline:
        ready += proc.stdout.readline().endswith('ready\n')
    assert ready == 2
    proc.send_signal(signum)
    got, _, err = finish(proc)
    assert got == status
    assert 'interrupted; ending the job' in err
    launching.assert_no_orphans(token)


@pytest.mark.parametrize('args, message', [
    (['-n', '0', '--', 'true'], 'Invalid num_workers: 0'),
    (['-n', '1', '-s', '0', '--', 'true'], 'Invalid num_servers: 0'),
    (['-n', '1', '--timeout', '0', '--', 'true'], 'Invalid timeout: 0'),
    (['-n', '1', '--timeout', 'nan', '--', 'true'], 'Invalid timeout: nan'),
    (['-n', '1'], 'Invalid command: empty'),
    (['-n', '1', '--'], 'Invalid command: empty'),
])
@pytest.mark.slow
def test_bad_arguments_are_refused_before_anything_starts(token, args, message):
    status, out, err = finish(start(args, token))
    assert status == 2
    assert message in err
    assert out == ''
    launching.assert_no_orphans(token)
