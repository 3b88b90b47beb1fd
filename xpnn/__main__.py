"""``python -m xpnn`` and the ``xpnn`` command.

The command's modules (NumPy, Numba, the layers) take a noticeable moment to import; a Ctrl-C in
that moment is answered like one during a run, ``xpnn: interrupted`` and exit status 130, not a
traceback. So this entry point imports them itself, and ``xpnn/__init__.py`` imports nothing
eagerly."""

import sys


def main(argv=None):
    """Run the ``xpnn`` command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from .distributed.launch import limit_threads

    limit_threads()  # under mpiexec, before NumPy and Numba read their thread counts
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("xpnn: interrupted", file=sys.stderr)
        return 130
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
