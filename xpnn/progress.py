"""Progress bars that suit where they are shown, made when a loop starts (never at import).

A terminal gets tqdm's text bar on stderr; a Jupyter notebook gets the widget bar when ipywidgets
is installed, else the text bar; a log file or a pipe gets none, so ``xpnn train > log 2>&1``
holds the per-epoch lines and not hundreds of carriage returns. tqdm is imported only when a bar
is drawn, so ``import xpnn`` prints nothing (``tqdm.auto`` warns at import in a notebook without
ipywidgets).
"""

import importlib.util
import sys


class _NoBar:
    """What the loops call when no bar is drawn."""

    disable = True

    def update(self, n=1):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def in_notebook():
    """Whether the code runs in a Jupyter kernel (IPython's ZMQ shell)."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def shows_progress(stream=None):
    """The default for ``progress=None``: draw a bar on a terminal or in a notebook, not into a
    file or a pipe."""
    stream = sys.stderr if stream is None else stream
    if in_notebook():
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(enabled=None, **options):
    """A tqdm bar on stderr with ``options`` (total, desc, unit, ...), or one that draws nothing.
    ``enabled``: True, False, or None for :func:`shows_progress`."""
    if enabled is None:
        enabled = shows_progress()
    if not enabled:
        return _NoBar()
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(file=sys.stderr, **options)
