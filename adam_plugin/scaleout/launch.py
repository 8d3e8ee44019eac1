"""Run a distributed-KVStore job on this host: ``python -m adam_plugin.scaleout.launch``.

::

    python -m adam_plugin.scaleout.launch -n WORKERS [-s SERVERS] [--timeout SECONDS]
        [--idle-timeout SECONDS] -- COMMAND ...

starts one ps-lite scheduler, ``SERVERS`` servers and ``WORKERS`` copies of
``COMMAND`` on 127.0.0.1 (loopback, a free port), with the ``DMLC_*`` variables
MXNet reads. Each line a worker prints is prefixed with ``[worker RANK]``,
``RANK`` being its ``kv.rank``: ps-lite ranks workers by their port, so worker
``i`` is given the ``i``-th smallest of the free ports picked (``PORT``). The
exit status is the first non-zero one among the workers (a server or the
scheduler failing also fails the job); on that failure, on the timeout (status
124), when the job looks hung (status 124, see below), when the launcher's
output pipe closes (status 141, as a shell's program ends by SIGPIPE: ``launch
... | head -1``, at the first line relayed after ``head`` exits) or on Ctrl-C /
SIGTERM / SIGHUP (status 130 / 143 / 129) every process started is ended, with
its whole process group, so nothing is left behind. A SIGKILLed launcher cannot
do that itself: a watchdog process (``WATCHDOG_CODE``), which the launcher
tells the process group of everything it starts, ends them when the launcher's
end of its pipe closes without a word. A worker command that cannot be run ends
the launcher with one line and status 127 (not found) or 126, as a shell's.

A Python worker (``COMMAND`` is a Python interpreter running a script, ``-m
MODULE`` or ``-c CODE``) is started through ``WORKER_CODE``, which makes a
failure end that worker at once, before the script's first line runs: an uncaught
exception (:func:`adam_plugin.distributed.exit_on_uncaught_exception`) or a
``sys.exit`` with a non-zero status ends the process with ``os._exit``, skipping
the interpreter's shutdown, where ps-lite would wait for the other workers
forever. (``atexit`` handlers do not run then.) Other commands run as given.

A job looks hung when, for ``--idle-timeout`` seconds (``--help`` shows the
default, ``IDLE_TIMEOUT``), its workers together used less than ``IDLE_CPU`` of
a second of CPU: a worker stuck in a wait, and peers waiting for it in a push or
pull, use none. A heartbeat the user has to call was the alternative; the CPU
clock needs no change to the script and no default deadline that a long job
would run into. A job whose workers all wait on something slow (a download) for
that long should raise the value, or turn it off with ``--idle-timeout 0``.

It starts the processes MXNet's ``tools/launch.py --launcher local`` starts.

Servers run :data:`SERVER_CODE`: MXNet enters a server's
serving loop inside ``import mxnet`` and unpickles the optimizer there, which
imports ``adam_plugin.optimizer`` from the half-initialised ``mxnet`` (it only
imports submodules, so that works). The code first installs a hook that ends the
server with status 1 when the optimizer cannot be unpickled or raises while
updating: MXNet would otherwise print the error and carry on serving wrong
values, and the workers would train on garbage. The launcher then fails the job.

The scheduler runs :data:`SCHEDULER_CODE`: what ``import mxnet`` does in a
scheduler, through MXNet's C API without its Python package (whose import costs
about 2 s of CPU here; the scheduler never runs Python code of MXNet's).
"""
__all__ = ['launch', 'main', 'dmlc_env', 'SERVER_CODE', 'SCHEDULER_CODE']

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time

# adam_plugin/, whose files the launcher loads alone or hands to the processes it starts: it
# also runs as a script, without the package, which imports MXNet.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_alone(name, path):
    """The module in ``path`` (under ``adam_plugin/``), loaded alone, as ``name``."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(_PACKAGE, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: What servers and the scheduler run, as ``python -c SERVER_CODE``.
#: An exception in MXNet's server-side Python callbacks (unpickling the optimizer,
#: running its update) is "unraisable": ctypes prints it and returns. Make it fatal.
SERVER_CODE = """\
import os, sys
def _fatal(unraisable):
    sys.__unraisablehook__(unraisable)
    print('adam_plugin.scaleout.launch: the kvstore server failed in its optimizer callback '
          '(see the traceback above); ending the server', file=sys.stderr, flush=True)
    os._exit(1)
sys.unraisablehook = _fatal
import mxnet
"""

#: What the scheduler runs, as ``python -c SCHEDULER_CODE``: what ``import mxnet`` does in
#: a scheduler, without MXNet's Python package (see
#: ``adam_plugin/mxnet_internals/scheduler.py``).
SCHEDULER_CODE = _load_alone('adam_plugin_scheduler',
                             os.path.join('mxnet_internals', 'scheduler.py')).SCHEDULER_CODE

#: What a Python worker runs, as ``python [OPTIONS] -c WORKER_CODE DISTRIBUTED MODE
#: TARGET ARGS...``: ``DISTRIBUTED`` is the path of ``adam_plugin/distributed.py`` (loaded
#: alone: importing the package would import MXNet before the script asks for it);
#: ``MODE`` ``-c``, ``-m`` or ``script``; ``TARGET`` the code, module or path. The script
#: then runs as ``__main__`` with the ``sys.argv`` and ``sys.path[0]`` Python gives it.
WORKER_CODE = """\
import importlib.util, os, runpy, sys
_distributed, _mode, _target, *_args = sys.argv[1:]
_spec = importlib.util.spec_from_file_location('adam_plugin_distributed', _distributed)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_module.exit_on_uncaught_exception()
try:
    if _mode == '-c':
        sys.argv = ['-c', *_args]
        exec(compile(_target, '<string>', 'exec'), vars(sys.modules['__main__']))
    elif _mode == '-m':
        sys.argv = [_target, *_args]
        if not sys.flags.safe_path:
            sys.path[0] = os.getcwd()
        runpy.run_module(_target, run_name='__main__', alter_sys=True)
    else:
        sys.argv = [_target, *_args]
        if not sys.flags.safe_path:
            sys.path[0] = os.path.dirname(os.path.realpath(_target))
        runpy.run_path(_target, run_name='__main__')
except SystemExit as _exit:
    if _exit.code is None or _exit.code == 0:
        raise
    if not isinstance(_exit.code, int):
        print(_exit.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit.code if isinstance(_exit.code, int) else 1)
"""

#: What the watchdog runs, as ``python -c WATCHDOG_CODE GRACE``, in a session of its own:
#: it reads the launcher's pipe, a process group id per line, until ``done``. If the pipe
#: closes first (the launcher died, even by SIGKILL), it ends those groups: SIGTERM, then
#: SIGKILL after GRACE seconds.
WATCHDOG_CODE = """\
import os, signal, sys, time
groups = []
for line in sys.stdin:
    if line.strip() == 'done':
        sys.exit(0)
    groups.append(int(line))
def signal_all(signum):
    alive = []
    for group in groups:
        try:
            os.killpg(group, signum)
            alive.append(group)
        except (ProcessLookupError, PermissionError):
            pass
    return alive
deadline = time.monotonic() + float(sys.argv[1])
while signal_all(signal.SIGTERM) and time.monotonic() < deadline:
    time.sleep(0.1)
signal_all(signal.SIGKILL)
"""

#: Seconds each process gets to exit after SIGTERM before SIGKILL.
GRACE = 5.0
#: Default ``--idle-timeout``: seconds of (almost) no CPU used by all workers together
#: after which the job is ended as hung. Long enough for any wait a healthy job makes
#: between its steps (a checkpoint written, an evaluation on one worker while the others
#: wait in a barrier use CPU; a collective wait for a slow peer is counted as hung only
#: if the peer is idle too).
IDLE_TIMEOUT = 300.0
#: CPU seconds all workers together must use in ``--idle-timeout`` not to look hung.
IDLE_CPU = 0.1
#: Seconds servers and the scheduler get to stop by themselves after the last worker
#: exits 0; then they are ended (workers that never opened a dist KVStore leave them waiting).
SERVER_EXIT_WAIT = 10.0


def free_ports(count):
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago, ascending."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(('127.0.0.1', 0))
        return sorted(sock.getsockname()[1] for sock in socks)
    finally:
        for sock in socks:
            sock.close()


def dmlc_env(role, num_workers, num_servers, root_port, port=None):
    """The environment for one ps-lite process on loopback.

    Parameters
    ----------
    role : {'scheduler', 'server', 'worker'}
    num_workers, num_servers : int
    root_port : int
        The scheduler's port on 127.0.0.1.
    port : int, optional
        This process's own port (ps-lite's ``PORT``); ps-lite ranks workers by it.
    """
    env = dict(os.environ, DMLC_ROLE=role, DMLC_PS_ROOT_URI='127.0.0.1',
               DMLC_PS_ROOT_PORT=str(root_port), DMLC_NUM_WORKER=str(num_workers),
               DMLC_NUM_SERVER=str(num_servers), DMLC_NODE_HOST='127.0.0.1',
               DMLC_INTERFACE='lo', PYTHONUNBUFFERED='1')
    if port is not None:
        env['PORT'] = str(port)
    return env


def python_worker(command):
    """``command`` started through :data:`WORKER_CODE` if it runs Python code (a script,
    ``-m MODULE`` or ``-c CODE``, after any interpreter options), else ``command``."""
    if not os.path.basename(command[0]).startswith('python'):
        return command
    i = 1
    while i < len(command) and command[i].startswith('-') and command[i] not in ('-c', '-m'):
        i += 2 if command[i] in ('-W', '-X') else 1  # options that take the next argument
    if i >= len(command) or command[i] == '-':
        return command  # the interactive interpreter, or code from stdin
    distributed = os.path.join(_PACKAGE, 'distributed.py')
    if command[i] in ('-c', '-m'):
        if i + 1 >= len(command):
            return command  # Python itself reports the missing argument
        mode, rest = command[i], command[i + 1:]
    else:
        mode, rest = 'script', command[i:]
    return [*command[:i], '-c', WORKER_CODE, distributed, mode, *rest]


def cpu_seconds(pid):
    """CPU time (user + system) process ``pid`` has used, or 0 if it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class _Watchdog:
    """The process that ends the job's process groups if the launcher dies (see
    :data:`WATCHDOG_CODE`)."""

    def __init__(self):
        self.popen = subprocess.Popen([sys.executable, '-c', WATCHDOG_CODE, str(GRACE)],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True,
                                      text=True)

    def watch(self, group):
        self.popen.stdin.write(f'{group}\n')
        self.popen.stdin.flush()

    def stand_down(self):
        """The job has ended; the watchdog exits."""
        try:
            self.popen.stdin.write('done\n')
            self.popen.stdin.close()
        except BrokenPipeError:
            pass
        self.popen.wait()


class _Output:
    """The launcher's stdout and stderr, written by several threads.

    A write to a pipe whose reader has gone (``launch ... | head -1``) fails; from then on
    what goes there is dropped (the file descriptor now leads to ``/dev/null``), and
    :attr:`closed` is set: the launcher ends the job with status 141, as a shell's program
    ends by SIGPIPE. Relaying goes on meanwhile, so no process blocks on a full pipe.
    """

    def __init__(self):
        self.closed = threading.Event()

    def write(self, sink, text):
        try:
            sink.write(text)
            sink.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sink.fileno())
            os.close(devnull)
            self.closed.set()

    def say(self, message):
        """A message of the launcher's own, on stderr."""
        self.write(sys.stderr, f'adam_plugin.scaleout.launch: {message}\n')


class _Process:
    """One started process, in its own process group, its output relayed with a prefix."""

    def __init__(self, name, argv, env, watchdog, output):
        self.name = name
        self.popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      start_new_session=True)
        watchdog.watch(self.popen.pid)
        self.relays = [threading.Thread(target=_relay,
                                        args=(pipe, f'[{name}] ', sink, output), daemon=True)
                       for pipe, sink in ((self.popen.stdout, sys.stdout),
                                          (self.popen.stderr, sys.stderr))]
        for relay in self.relays:
            relay.start()

    def status(self):
        """The exit status as a shell reports it (128 + N for signal N), or None if running."""
        code = self.popen.poll()
        return None if code is None else (128 - code if code < 0 else code)

    def signal_group(self, signum):
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def flush(self):
        for relay in self.relays:
            relay.join(timeout=GRACE)


def _relay(pipe, prefix, sink, output):
    for line in iter(pipe.readline, b''):
        output.write(sink, prefix + line.decode('utf-8', 'replace'))
    pipe.close()


def _end(processes):
    """SIGTERM every process group, then SIGKILL whatever is still there after GRACE."""
    for proc in processes:
        proc.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    for proc in processes:
        try:
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        proc.signal_group(signal.SIGKILL)  # also reaches children that outlived the leader
        proc.popen.wait()
        proc.flush()


def _supervise(workers, others, timeout, idle_timeout, output):
    """Wait for the job; return its exit status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    idle_since, cpu = time.monotonic(), None
    while not all(proc.status() == 0 for proc in workers):
        if output.closed.is_set():
            output.say('the output pipe closed (its reader exited); ending the job')
            return 141
        for proc in workers + others:
            if proc.status():
                output.say(f'{proc.name} exited with status {proc.status()}; ending the job')
                return proc.status()
        now = time.monotonic()
        if deadline is not None and now > deadline:
            output.say(f'timed out after {timeout:g} s; ending the job')
            return 124
        used = sum(cpu_seconds(proc.popen.pid) for proc in workers)
        if cpu is None or used - cpu >= IDLE_CPU:
            idle_since, cpu = now, used
        elif idle_timeout and now - idle_since > idle_timeout:
            output.say(f'the workers used {used - cpu:.2f} s of CPU in the last '
                       f'{idle_timeout:g} s: the job looks hung (--idle-timeout); ending the job')
            return 124
        time.sleep(0.05)
    # The servers and the scheduler stop by themselves once the workers' KVStores close.
    wait_until = time.monotonic() + SERVER_EXIT_WAIT
    while any(proc.status() is None for proc in others) and time.monotonic() < wait_until:
        time.sleep(0.05)
    failed = [proc for proc in others if proc.status()]
    for proc in failed:
        output.say(f'{proc.name} exited with status {proc.status()}')
    return 1 if failed else 0


def launch(command, num_workers, num_servers=1, timeout=None, idle_timeout=IDLE_TIMEOUT):
    """Run ``command`` as ``num_workers`` workers with ``num_servers`` servers; return the status.

    Parameters
    ----------
    command : list of str
        The worker's argv.
    num_workers, num_servers : int
        At least 1 each.
    timeout : float, optional
        Seconds before the whole job is ended (status 124).
    idle_timeout : float, default IDLE_TIMEOUT
        Seconds during which the workers using (almost) no CPU ends the job as hung
        (status 124); 0 or None: never.

    Raises
    ------
    ValueError
        If ``command`` is empty, or a count or ``timeout`` is not positive, or
        ``idle_timeout`` is negative.
    """
    if not command:
        raise ValueError('Invalid command: empty (expected the worker program after --)')
    for name, value in (('num_workers', num_workers), ('num_servers', num_servers)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f'Invalid {name}: {value!r} (expected an integer >= 1)')
    if timeout is not None and not timeout > 0:
        raise ValueError(f'Invalid timeout: {timeout!r} (expected seconds > 0)')
    if idle_timeout is not None and not idle_timeout >= 0:
        raise ValueError(f'Invalid idle_timeout: {idle_timeout!r} (expected seconds >= 0; '
                         '0: never)')
    root_port, *worker_ports = free_ports(1 + num_workers)
    started = []

    def terminate(signum, frame):
        raise KeyboardInterrupt(signum)

    # SIGHUP: the terminal or ssh session closed. The children, in sessions of their
    # own, do not get it; the launcher ends them as on SIGTERM.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminate),
                signal.SIGHUP: signal.signal(signal.SIGHUP, terminate),
                signal.SIGINT: signal.getsignal(signal.SIGINT)}
    watchdog, output = None, _Output()
    try:
        watchdog = _Watchdog()

        def start(name, argv, role, port=None):
            started.append(_Process(name, argv, dmlc_env(role, num_workers, num_servers,
                                                         root_port, port), watchdog, output))
            return started[-1]

        others = [start('scheduler', [sys.executable, '-c', SCHEDULER_CODE], 'scheduler')]
        others += [start(f'server {i}', [sys.executable, '-c', SERVER_CODE], 'server')
                   for i in range(num_servers)]
        try:
            workers = [start(f'worker {rank}', python_worker(list(command)), 'worker', port)
                       for rank, port in enumerate(worker_ports)]
        except OSError as err:  # as a shell says: 127 not found, 126 found but not runnable
            output.say(f'cannot run the worker command {command[0]!r}: {err.strerror}')
            status = 127 if isinstance(err, FileNotFoundError) else 126
        else:
            status = _supervise(workers, others, timeout, idle_timeout, output)
    except KeyboardInterrupt as interrupt:
        status = 128 + (interrupt.args[0] if interrupt.args else signal.SIGINT)
        output.say('interrupted; ending the job')
    finally:
        for signum in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        _end(started)
        if watchdog is not None:
            watchdog.stand_down()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def main(argv=None):
    """Run ``python -m adam_plugin.scaleout.launch``: parse ``argv``, run the job, return
    its exit status (see this module's docstring).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the module's name (default: ``sys.argv[1:]``):
        ``['-n', '2', '--', sys.executable, 'train.py']`` runs two workers of
        ``train.py`` and one server.

    Returns
    -------
    int
        The job's exit status, as :func:`launch` returns it: 0 when every worker ended
        with 0, else one of those this module's docstring lists (the first non-zero
        status among the workers, 124 on a timeout or a hung job, 127 for a worker
        command not found, ...).

    Raises
    ------
    SystemExit
        With status 2 and argparse's usage and error on stderr, for a bad argument or
        one :func:`launch` refuses (a count below 1, no command, a timeout not
        positive), before any process is started.
    """
    parser = argparse.ArgumentParser(
        prog='python -m adam_plugin.scaleout.launch',
        description='Run a distributed-KVStore job (scheduler, servers, workers) on 127.0.0.1.')
    parser.add_argument('-n', '--num-workers', type=int, required=True, help='worker count')
    parser.add_argument('-s', '--num-servers', type=int, default=1,
                        help='server count (default 1)')
    parser.add_argument('--timeout', type=float, default=None,
                        help='seconds before the job is ended with status 124 (default: none)')
    parser.add_argument('--idle-timeout', type=float, default=IDLE_TIMEOUT,
                        help='seconds of (almost) no CPU used by the workers after which the '
                             f'job is ended as hung, status 124 (default {IDLE_TIMEOUT:g}; '
                             '0: never)')
    parser.add_argument('command', nargs=argparse.REMAINDER,
                        help='-- then the worker command')
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    try:
        return launch(command, args.num_workers, args.num_servers, args.timeout,
                      args.idle_timeout)
    except ValueError as err:
        parser.error(str(err))


if __name__ == '__main__':
    sys.exit(main())
