"""Running ``python -m adam_plugin.scaleout.launch`` from the tests, always within a time limit."""
import os
import signal
import subprocess
import sys
import time


def _as_a_foreground_job():
    """Ctrl-C's default action, which a shell without job control (a CI script's ``&``)
    replaces with 'ignore' for what it starts, and children inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args, **env):
    """Start the launcher with ``args``, extra environment ``env``, output captured as text,
    as a user's foreground job (Ctrl-C not ignored)."""
    return subprocess.Popen([sys.executable, '-m', 'adam_plugin.scaleout.launch', *args],
                            env=dict(os.environ, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_a_foreground_job)


def finish(proc, timeout):
    """Wait at most ``timeout`` seconds; return ``(status, stdout, stderr)``.

    On the time limit the launcher gets SIGTERM, which makes it end its whole job
    (SIGKILL would leave its servers and workers behind), and the test fails.
    """
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.communicate(timeout=30)
        raise
    return proc.returncode, out, err


def survivors(token):
    """Live (non-zombie) processes whose environment holds ``token``."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                environ = f.read()
            with open(f'/proc/{pid}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if token.encode() in environ and state != 'Z':
            found.append(int(pid))
    return found


def orphans(token):
    """The processes with ``token`` in their environment that are still there after 10 s."""
    deadline = time.monotonic() + 10  # reparented children may take a moment to be reaped
    while survivors(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    return survivors(token)


def assert_no_orphans(token):
    """Every process started with ``token`` in its environment is gone (within 10 s)."""
    assert orphans(token) == []
