"""Run ``python -m adam_plugin`` in a subprocess, as a user would."""
import subprocess
import sys


def run_cli(*args, check=True):
    """Return the finished process (``stdout``, ``stderr``, ``returncode`` as text)."""
    return subprocess.run([sys.executable, '-m', 'adam_plugin', *args],
                          capture_output=True, text=True, timeout=300, check=check)
