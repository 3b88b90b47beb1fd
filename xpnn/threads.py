"""xpnn's own threads for NumPy work: ``set_num_threads(n)`` splits the GEMMs and the compiled
loops of a training step over ``n`` threads, with NumPy's BLAS held to one thread meanwhile.

Why not leave the threads to BLAS: between two GEMMs, OpenBLAS's idle workers spin for a while
before they sleep, so any other thread started then shares a core with a spinning one, and the
compiled loops (Winograd's tile transforms, im2col, ReLU, pooling, batch norm), a large part of a
convolutional step, ran on one core while BLAS's worker spun on the other (``bench/threads.py``,
``bench/NOTES.md``). With ``n`` > 1 xpnn limits BLAS to one thread through ``threadpoolctl`` and runs
each piece of work on its own pool of ``n - 1`` threads plus the caller; the Numba loops release
the GIL, and so does NumPy's matmul. ``n`` = 1 (the default outside ``Trainer``) gives BLAS its
threads back and runs everything on the caller, as before.

``Trainer.fit`` runs with ``parallel(xpnn.train.default_threads(model))``: the count already set
when above 1; else, for a model with a wide convolution, as many threads as BLAS had (which
follows ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``, and so the per-rank share that ``mpiexec``
runs get); else 1. Only NumPy work splits: CuPy and other namespaces are unaffected. Set the count from one thread, outside any piece of work: changing it
replaces the pool. With an OpenBLAS built on OpenMP (some distribution and conda builds) the
one-thread limit may not hold and the two kinds of threads then share the cores; keep the count at
1 there."""

import concurrent.futures
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

from .errors import ConfigError

_lock = threading.Lock()
_state = {"count": 1, "pool": None, "blas_limit": None, "blas_before": None}


def get_num_threads():
    """The number of threads xpnn's NumPy operations split their work over (1: no splitting)."""
    return _state["count"]


def set_num_threads(count):
    """Split xpnn's NumPy work over ``count`` threads (an int >= 1), NumPy's BLAS held to one
    thread while ``count`` > 1; ``count`` = 1 restores BLAS's own thread count."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"set_num_threads: expected a whole number of threads >= 1, got {count!r}")
    with _lock:
        if count == _state["count"]:
            return
        if _state["pool"] is not None:
            _state["pool"].shutdown(wait=True)
            _state["pool"] = None
        if count > 1:
            _state["pool"] = ThreadPoolExecutor(count - 1, thread_name_prefix="xpnn")
            if _state["blas_limit"] is None:
                _state["blas_before"] = blas_threads()
                _state["blas_limit"] = _limit_blas()
        elif _state["blas_limit"] is not None:
            _state["blas_limit"].restore_original_limits()
            _state["blas_limit"] = _state["blas_before"] = None
        _state["count"] = count


def blas_threads():
    """How many threads NumPy's BLAS would use now (1 when unknown), before xpnn limits it."""
    if _state["blas_before"] is not None:
        return _state["blas_before"]
    import numpy as np  # noqa: F401  (BLAS is loaded with NumPy; threadpoolctl finds it loaded)
    from threadpoolctl import threadpool_info

    return max([info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"] or [1])


@contextlib.contextmanager
def parallel(count=None):
    """Run the block with ``count`` threads (None: the count already set when above 1, else as
    many as BLAS has), then restore the count that was set before."""
    before = get_num_threads()
    if count is None:
        count = before if before > 1 else blas_threads()
    set_num_threads(count)
    try:
        yield count
    finally:
        set_num_threads(before)


def _limit_blas():
    import numpy as np  # noqa: F401  (BLAS is loaded with NumPy; threadpoolctl finds it loaded)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# Work below about this many array elements per thread runs whole on the calling thread: handing a
# piece to the pool costs some tens of microseconds (bench/threads.py).
SPLIT_MIN_ELEMENTS = 1 << 17


def spans(size, item_elements=1):
    """:func:`ranges` of ``size`` items of ``item_elements`` array elements each, every range at
    least ``SPLIT_MIN_ELEMENTS`` elements: how the compiled loops split their outer axis."""
    return ranges(size, grain=-(-SPLIT_MIN_ELEMENTS // max(item_elements, 1)))


def ranges(size, parts=None, grain=1):
    """``size`` split into at most ``parts`` (default: the thread count) contiguous
    ``(start, stop)`` ranges of nearly equal length, each at least ``grain`` long (one range when
    ``size`` < 2 * grain)."""
    parts = get_num_threads() if parts is None else parts
    parts = max(1, min(parts, size // max(grain, 1)))
    bounds = [size * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def run(work, pieces):
    """``[work(*piece) for piece in pieces]``, the first piece on the calling thread and the rest on
    xpnn's pool, in parallel; results in order, the first exception raised after all finished.
    Called from inside a piece (on a pool thread), it runs the pieces there one after another: a
    pool thread waiting for the pool could wait for itself."""
    pieces = list(pieces)
    pool = _state["pool"]
    if pool is None or len(pieces) < 2 or getattr(_inside, "piece", False):
        return [work(*piece) for piece in pieces]
    futures = [pool.submit(_as_piece, work, *piece) for piece in pieces[1:]]
    try:
        first = work(*pieces[0])
    finally:
        _wait_all(futures)  # no piece may still be writing when run returns or raises
    return [first, *[future.result() for future in futures]]  # .result() re-raises a piece's error


def _wait_all(futures):
    """Wait until every future has finished, through a Ctrl-C, which is raised afterwards."""
    interrupted = None
    while True:
        try:
            concurrent.futures.wait(futures)
            break
        except KeyboardInterrupt as error:
            interrupted = error
    if interrupted is not None:
        raise interrupted


_inside = threading.local()


def _as_piece(work, *piece):
    _inside.piece = True
    try:
        return work(*piece)
    finally:
        _inside.piece = False


