"""Running ``python -m adam_plugin.scaleout.launch`` from the tests, always within a time limit."""
import os
import subprocess
import sys


def start(args, **env):
    """Start the launcher with ``args``, extra environment ``env``, output captured as text."""
    return subprocess.Popen([sys.executable, '-m', 'adam_plugin.scaleout.launch', *args],
                            env=dict(os.environ, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


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
