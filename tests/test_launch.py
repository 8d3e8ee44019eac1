"""``python -m adam_plugin.scaleout.launch``: exit statuses, output prefixes, and no orphans."""
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

import launching
from adam_plugin.scaleout import launch as launch_module

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
# Plain scripts as users write them, catching nothing: rank 1 fails after 'ready' with
# sys.exit(3), or with an exception before any Trainer exists; rank 0 waits.
EXIT_3 = OPEN_KV + "print('ready', flush=True); sys.exit(3) if kv.rank == 1 else time.sleep(300)"
RAISES = OPEN_KV + ("print('ready', flush=True)\n"
                    "if kv.rank == 1:\n    raise RuntimeError('no data here')\ntime.sleep(300)")
# Workers that wait without opening the KVStore (no MXNet to import: cheaper) and leave a
# grandchild: what must end on a signal to the launcher, or once the job looks hung.
WAIT = ("import subprocess, time; subprocess.Popen(['sleep', '300']); "
        "print('ready', flush=True); time.sleep(300)")
# Workers that print a line a millisecond, for ever, as a chatty training log.
CHATTY = "import time\nwhile True:\n    print('x' * 100, flush=True)\n    time.sleep(0.001)"


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


def until_ready(proc, workers):
    """Read the launcher's output until ``workers`` lines say 'ready' (or LIMIT passes);
    return how many did."""
    ready, deadline = 0, time.monotonic() + LIMIT
    while ready < workers and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        ready += line.endswith('ready\n')
    return ready


@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow
def test_interrupt_ends_the_job(token, signum, status):
    proc = start(['-n', '2', '--timeout', str(3 * LIMIT), '--', sys.executable, '-c', HANG],
                 token)
    assert until_ready(proc, 2) == 2
    proc.send_signal(signum)
    got, _, err = finish(proc)
    assert got == status
    assert 'interrupted; ending the job' in err
    launching.assert_no_orphans(token)


@pytest.mark.slow
def test_a_closed_output_pipe_ends_the_job_with_141(token):
    """``launch ... | head -1`` in a shell: the job ends at once, as a program that a closed
    pipe ends (SIGPIPE), instead of blocking on full pipes until it looks hung."""
    launcher = [sys.executable, '-m', 'adam_plugin.scaleout.launch', '-n', '2',
                '--timeout', '60', '--idle-timeout', '5', '--', sys.executable, '-c', CHATTY]
    done = subprocess.run(['bash', '-c', 'set -o pipefail; "$@" | head -1', 'bash', *launcher],
                          env=dict(os.environ, ADAM_PLUGIN_TEST_TOKEN=token),
                          capture_output=True, text=True, timeout=LIMIT)
    assert done.returncode == 141, done.stderr
    assert re.fullmatch(r'\[worker [01]\] x{100}\n', done.stdout)
    assert 'adam_plugin.scaleout.launch: the output pipe closed (its reader exited); ' \
        'ending the job\n' in done.stderr
    assert 'Traceback' not in done.stderr and 'Exception' not in done.stderr
    launching.assert_no_orphans(token)


@pytest.mark.parametrize('found, status, why', [
    (False, 127, 'No such file or directory'),
    (True, 126, 'Permission denied'),  # a file, not executable
])
@pytest.mark.slow
def test_a_worker_command_that_cannot_run_is_one_line(token, found, status, why, tmp_path):
    """As a shell reports it: 127 for a command not found, 126 for one it cannot run."""
    command = str(tmp_path / 'train.sh') if found else 'adam-plugin-no-such-command'
    if found:
        (tmp_path / 'train.sh').write_text('echo not executable\n')
        os.chmod(command, 0o644)
    got, out, err = finish(start(['-n', '2', '--', command], token))
    assert (got, out) == (status, '')
    assert err == f"adam_plugin.scaleout.launch: cannot run the worker command {command!r}: " \
        f"{why}\n"
    launching.assert_no_orphans(token)


@pytest.mark.parametrize('args, message', [
    (['-n', '0', '--', 'true'], 'Invalid num_workers: 0'),
    (['-n', '1', '-s', '0', '--', 'true'], 'Invalid num_servers: 0'),
    (['-n', '1', '--timeout', '0', '--', 'true'], 'Invalid timeout: 0'),
    (['-n', '1', '--timeout', 'nan', '--', 'true'], 'Invalid timeout: nan'),
    (['-n', '1', '--idle-timeout', '-1', '--', 'true'], 'Invalid idle_timeout: -1'),
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


# --- the job ends as specified, every time: `make failfast` runs each row 20 times ---------

RUNS = int(os.environ.get('ADAM_PLUGIN_LAUNCH_RUNS', '1'))
BOUND = 15  # seconds from the event (a worker fails, a signal) to the end of the whole job

ENDINGS = {
    # name: (worker program, launcher options, signal sent to the launcher once both
    #        workers are ready, the launcher's status, what its stderr must say)
    'a worker calls sys.exit(3)': (EXIT_3, [], None, 3,
                                   'worker 1 exited with status 3; ending the job'),
    'a worker raises before its first step': (RAISES, [], None, 1,
                                              'RuntimeError: no data here'),
    'the workers hang': (WAIT, ['--idle-timeout', '5'], None, 124, 'the job looks hung'),
    'SIGHUP (the terminal closed)': (WAIT, [], signal.SIGHUP, 129,
                                     'interrupted; ending the job'),
    'SIGKILL': (WAIT, [], signal.SIGKILL, -signal.SIGKILL, ''),
}
IDLE_ROW_EXTRA = 5  # the hung row ends by its --idle-timeout after 'ready'


def ending_run(program, options, signum):
    """One job; returns (status, stderr, seconds from the event to its end, processes left,
    whether the event happened). The event: the first 'ready' (a failing worker fails
    right after its own), or the signal, sent once both workers are ready."""
    token = f'adam-plugin-test-{uuid.uuid4()}'
    proc = start(['-n', '2', '--timeout', str(LIMIT), *options, '--',
                  sys.executable, '-c', program], token)
    wanted = 1 if signum is None else 2
    happened = until_ready(proc, wanted) == wanted
    since = time.monotonic()
    if signum is not None and happened:
        proc.send_signal(signum)
    status, _, err = finish(proc)
    return status, err, time.monotonic() - since, launching.orphans(token), happened


@pytest.mark.parametrize('name', ENDINGS)
@pytest.mark.slow
def test_a_job_ends_as_specified_every_time(name):
    program, options, signum, want, message = ENDINGS[name]
    bound = BOUND + (IDLE_ROW_EXTRA if '--idle-timeout' in options else 0)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: ending_run(program, options, signum), range(RUNS)))
    problems = [f'run {i}: status {status} (want {want}), {seconds:.1f} s after the event '
                f'(happened: {happened}), left behind {left}\n{err}'
                for i, (status, err, seconds, left, happened) in enumerate(runs)
                if status != want or message not in err or seconds > bound or left
                or not happened]
    print(f'{name}:', *(f'{seconds:.1f} s' for _, _, seconds, _, _ in runs))
    assert not problems, '\n'.join(problems)


@pytest.mark.parametrize('command, expected', [
    (['python3', 'train.py', '--lr', '1'], ['script', 'train.py', '--lr', '1']),
    (['/usr/bin/python3.11', '-u', '-W', 'error', '-m', 'pkg.train', '-x'],
     ['-m', 'pkg.train', '-x']),
    (['python', '-X', 'dev', '-c', 'print(1)', 'a'], ['-c', 'print(1)', 'a']),
])
def test_python_workers_start_through_the_fail_fast_bootstrap(command, expected):
    wrapped = launch_module.python_worker(command)
    options = command[:len(command) - len(expected) + (1 if expected[0] == 'script' else 0)]
    assert wrapped[:len(options)] == options
    assert wrapped[len(options):len(options) + 2] == ['-c', launch_module.WORKER_CODE]
    assert wrapped[len(options) + 2].endswith(os.path.join('adam_plugin', 'distributed.py'))
    assert wrapped[len(options) + 3:] == expected


@pytest.mark.parametrize('command', [['sleep', '1'], ['python3'], ['python3', '-'],
                                     ['python3', '-u'], ['bash', '-c', 'python3 x.py']])
def test_other_commands_run_as_given(command):
    assert launch_module.python_worker(command) == command
