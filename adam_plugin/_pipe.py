"""What the package's commands do when the reader of their output goes away first
(``python -m adam_plugin moments | head -1``): end quietly with status 141, as a shell's
program ended by SIGPIPE does (and as the launcher, :mod:`adam_plugin.scaleout.launch`, does).

Internal: see :mod:`adam_plugin`.
"""
import os
import sys

CLOSED = 141


def run(main):
    """``main()``'s exit status, or :data:`CLOSED` without a traceback when writing to
    standard output found its pipe closed."""
    try:
        status = main()
        sys.stdout.flush()  # here, so that a closed pipe is found here, not at exit
        return status
    except BrokenPipeError:
        # Python flushes stdout again at exit and would report the error there: point it
        # at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED
