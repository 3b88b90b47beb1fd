"""Alternating timer: frameworks take turns block by block (A B A B ...), so drifts in clock speed
or background load hit all of them alike; every call is timed on its own and the median reported."""

import itertools
import statistics
import time


def per_call(fn, calls):
    """Seconds of each of ``calls`` calls of ``fn()``."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def cycling(step, batches):
    """A no-argument function running ``step`` on the next batch, round and round."""
    it = itertools.cycle(batches)
    return lambda: step(*next(it))


def block_size(fn, warmup, block_seconds, max_calls=200):
    """Warm ``fn`` up with ``warmup`` calls and return how many calls fill ``block_seconds``."""
    seconds = min(per_call(fn, max(warmup, 1)))
    return max(1, min(max_calls, round(block_seconds / seconds)))


def alternate(tasks, rounds, pause=0.0):
    """``tasks``: name -> (fn, calls per block, blocks). Runs the blocks in turn for ``rounds``
    rounds (a task stops after its own number of blocks), each round starting one task later, so
    no task always follows the same one, with ``pause`` seconds of sleep after each block (so a
    block does not start while the last one's threads still spin; ``bench/NOTES.md``); returns
    name -> seconds per call."""
    times = {name: [] for name in tasks}
    names = list(tasks)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn, calls, blocks = tasks[name]
            if r < blocks:
                times[name] += per_call(fn, calls)
                time.sleep(pause)
    return times


def median(values):
    return statistics.median(values) if values else None
