"""What a benchmark ran on, recorded in its JSON results (benchmarks/tables.py prints it)."""
import datetime
import importlib.metadata
import os
import platform
import subprocess


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler():
    try:
        done = subprocess.run(['g++', '--version'], capture_output=True, text=True, check=True)
        return done.stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError):
        return 'no g++'


def describe():
    """The date (UTC), the CPU and its cores, the versions, and the 1-minute load average
    now (before the run)."""
    return {'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            'cores': os.cpu_count(), 'cpu': _cpu(), 'python': platform.python_version(),
            'mxnet': _version('mxnet'), 'torch': _version('torch'), 'compiler': _compiler(),
            'load_before': os.getloadavg()[0]}
