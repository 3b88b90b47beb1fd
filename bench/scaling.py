"""Data-parallel scaling on this machine (issue 18): an epoch of the MLP and of LeNet on MNIST,
one process with 2 threads against ``mpiexec -n 2`` ranks with 1 thread each, and the share of
each data-parallel step spent in the gradient allreduce (which includes waiting for the slower
rank: on a shared machine that wait is most of it).

    python -m bench.scaling [--models mlp,lenet] [--epochs 2] [--data-dir ../shared/data/mnist]

Each configuration runs in a fresh process (threads are fixed when NumPy loads); the best epoch
of ``--epochs`` is reported with the load average before and after, since other work on the
machine moves these numbers more than anything measured here."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = {"mlp": 64, "lenet": 32}  # the CLI's defaults
THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def worker(model_name, epochs, data_dir):
    """One rank (or the one process): train, print one JSON line from rank 0."""
    import numpy as np

    import xpnn
    from xpnn import optim
    from xpnn.data import DataLoader, load_dataset
    from xpnn.distributed import get_communicator
    from xpnn.models import build_model
    from xpnn.train import Trainer

    comm = get_communicator("auto")
    train = load_dataset("mnist", train=True, root=data_dir)
    x, y = train.arrays()
    xpnn.manual_seed(0)
    model = build_model(model_name, tuple(x.shape[1:]), 10)
    loader = DataLoader(x, y, batch_size=BATCH[model_name], shuffle=True, seed=0)
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=1e-3), verbose=False, distributed=comm if comm.size > 1 else None)
    history = trainer.fit(loader, epochs, progress=False)
    times = list(history["epoch_time"])
    dp = trainer._dp
    result = {"ranks": comm.size, "epoch_s": min(times), "epoch_times": times, "loss": history["loss"][-1],
              "comm_fraction": dp.comm_seconds / sum(times) if dp else 0.0, "steps": dp.steps if dp else len(loader) * epochs}
    if comm.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    return np


def run(model, epochs, data_dir, ranks, threads):
    env = dict(os.environ, **{name: str(threads) for name in THREADS})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "bench.scaling", "--worker", model, "--epochs", str(epochs), "--data-dir", data_dir]
    if ranks > 1:
        command = [shutil.which("mpiexec"), "-n", str(ranks)] + command
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode or not line:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(line[0][7:])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,lenet")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.epochs, args.data_dir)
        return
    print(f"load before: {os.getloadavg()[0]:.2f}")
    print(f"{'model':6} {'1 proc x 2 thr s/epoch':>23} {'2 ranks x 1 thr s/epoch':>24} {'speed-up':>9} {'allreduce share':>16}")
    for model in args.models.split(","):
        one = run(model, args.epochs, args.data_dir, 1, 2)
        two = run(model, args.epochs, args.data_dir, 2, 1)
        print(f"{model:6} {one['epoch_s']:>23.2f} {two['epoch_s']:>24.2f} {one['epoch_s'] / two['epoch_s']:>8.2f}x {two['comm_fraction']:>15.1%}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
