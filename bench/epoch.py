"""One training epoch of one framework in a fresh process, so that its peak RSS is its own.

``run(...)`` starts ``python -m bench.epoch ...`` and returns what the child prints: the epoch's
seconds, the RSS when it started (data, model and libraries loaded, a few warm-up steps done)
and the peak RSS during it."""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from . import memory, mnist, runners

WARMUP_STEPS = 3


def measure(framework, model, batch_size, data_dir, seed=0, images=None):
    """Warm up on a few batches, then time one epoch over the first ``images`` training images (all
    by default)."""
    x, y = mnist.load(data_dir, model)
    x, y = x[:images], y[:images]
    runner = runners.make(framework, model, batch_size, seed=seed)
    data = runner.convert(x, y)
    warm = WARMUP_STEPS * batch_size
    runner.epoch(data[0][:warm], data[1][:warm], seed + 1)  # the same path as the timed epoch, on a few batches
    load_peak = memory.peak_rss_mib()
    reset = memory.reset_peak()
    start_rss = memory.rss_mib()
    start = time.perf_counter()
    runner.epoch(*data, seed)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "images": len(x),
        "start_rss_mib": start_rss,
        "peak_rss_mib": memory.peak_rss_mib(),
        "peak_includes_loading": not reset,
        "load_peak_rss_mib": load_peak,
    }


def run(framework, model, batch_size, data_dir, seed=0, images=None):
    """:func:`measure` in a child process; raises RuntimeError with the child's stderr if it fails."""
    cmd = [sys.executable, "-m", "bench.epoch", framework, model, str(batch_size), str(data_dir), "--seed", str(seed)]
    if images:
        cmd += ["--images", str(images)]
    child = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if child.returncode:
        raise RuntimeError(f"{framework} {model} epoch failed:\n{child.stderr.strip()[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.epoch", description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=runners.FRAMEWORKS)
    parser.add_argument("model")
    parser.add_argument("batch_size", type=int)
    parser.add_argument("data_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=None, help="only the first N training images")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.framework, args.model, args.batch_size, args.data_dir, args.seed, args.images)))


if __name__ == "__main__":
    main()
