"""The ``xpnn`` command: ``xpnn train``, ``xpnn eval`` and ``xpnn info``.

Every mistake a user can make (a bad option, a missing or corrupt file, ``--device cuda`` without
CuPy or a GPU, a checkpoint that does not fit, a run folder that holds another run, a diverging
run) ends with one line on stderr, ``xpnn: error: ...``, and exit status 2; Ctrl-C exits with 130
and SIGTERM with 143, each saying which checkpoint is intact; a closed stdout (``| head``) ends the
command quietly. Warnings are one line each, ``xpnn: warning: ...``.

The package follows the data one way: ``parser`` (the command line) -> ``run_config`` (a run's
settings, from the options, a checkpoint and ``recipes``) -> the commands (``train``, ``evaluate``,
``info``) and their reports. This module runs a command line and turns how it ended into the
exit status; the submodules never import it.
"""

import os
import signal
import sys
import threading
import warnings

from ..errors import XpnnError
from .parser import build_parser
from .recipes import MODEL_DEFAULTS, OPTIMIZERS, SCHEDULES

__all__ = [
    "EXIT_BROKEN_PIPE", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "MODEL_DEFAULTS", "OPTIMIZERS", "SCHEDULES",
    "Terminated", "build_parser", "main",
]

EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_BROKEN_PIPE = 2, 130, 143, 141


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a run stops the same clean way (writes finish or roll
    back, the intact checkpoint is named) but exits with 143."""


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error, already printed on one line
        return exc.code if isinstance(exc.code, int) else 2
    previous = _stop_on_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            status = args.func(args) or 0
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt as exc:
        what, status = ("terminated", EXIT_TERMINATED) if isinstance(exc, Terminated) else ("interrupted", EXIT_INTERRUPTED)
        print(f"xpnn: {what}" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return status
    except XpnnError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fail(message):
    print("xpnn: error: " + _one_line(message), file=sys.stderr)
    return EXIT_ERROR


def _one_line(text):
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Print a warning as one line, ``xpnn: warning: ...``, without the source location."""
    print("xpnn: warning: " + _one_line(message), file=sys.stderr)


def _raise_terminated(signum, frame):
    raise Terminated()


def _stop_on_sigterm():
    """Turn SIGTERM into :class:`Terminated` while the command runs; returns the handler to put
    back (None where signals cannot be caught: not the main thread, no SIGTERM)."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _stdout_gone():
    """stdout was closed by its reader (``xpnn eval ... | head``): stop without a message, and
    point stdout at the null device so that the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE
