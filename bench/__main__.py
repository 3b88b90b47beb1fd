"""python -m bench: time xpnn's training step and full MNIST epoch against PyTorch CPU and the seed
notebooks' NumPy code (MLP 784-256-10, the seed CNN, LeNet; Adam lr 1e-3, float32), and ResNet-20's
CIFAR-10 training step (random data of the real shape, SGD momentum 0.9; no epoch: no CIFAR files
here), and issue 20's wider networks (the 32/64-channel LeNet-style CNN, PyTorch's MNIST example
network; their epochs short and extrapolated unless --full-epochs), alternating the frameworks; print a table with issues 5's and 20's targets and write the results as JSON."""

import argparse
import os
import sys
import time
from pathlib import Path

from xpnn import XpnnError
from xpnn.files import write_json

from . import contention, epoch, gemm, mnist, report, runners, timing

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp", "cnn", "lenet", "resnet20", "cnn3264", "torchmnist")
BATCH_SIZES = {"mlp": (64, 256), "cnn": (64, 256), "lenet": (64, 128, 256), "resnet20": (128,), "cnn3264": (128,), "torchmnist": (64,)}
POOL = 32  # distinct pre-gathered batches the step timing cycles through
SEED_CONV_STEPS = 3  # the seed's loop convolution is timed on this many steps only
# Seconds of sleep after each block of steps: back to back, a framework's block ran up to 1.3x
# slower right after the other's (ResNet-20: xpnn 500 ms a step against 376 ms after a pause;
# PyTorch 175-181 against 144-150 ms), more than after its own (bench/NOTES.md).
BLOCK_PAUSE = 0.5
SETTINGS = ("models", "batch_sizes", "repeats", "epoch_repeats", "quick", "full_epochs", "data_dir", "no_torch", "threads")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)} (default: all)")
    p.add_argument("--batch-sizes", help="comma-separated, for every model (default: 64,256; LeNet also 128; ResNet-20 and cnn3264 128 only; torchmnist 64 only)")
    p.add_argument("--repeats", type=int, default=7, help="alternating rounds of step timing (default 7)")
    p.add_argument("--epoch-repeats", type=int, default=3, help="full epochs per framework, alternating (default 3)")
    p.add_argument("--full-epochs", action="store_true",
                   help=f"whole epochs for {','.join(runners.WIDER)} too (default: their first {runners.SHORT_EPOCH_BATCHES} batches, extrapolated)")
    p.add_argument("--quick", action="store_true", help="smoke test (< 1 min): batch 64, few steps, 4-batch epochs, no loop conv")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"), help="MNIST files (default ../shared/data/mnist)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu.json"), help="JSON output (default bench/results/cpu.json)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--threads", type=int, help="NumPy/PyTorch threads (default: all cores; 1 is steadier on a shared machine)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; expected some of {','.join(MODELS)}")
    if args.batch_sizes:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:
        args.repeats, args.epoch_repeats = 2, 1
        args.batch_sizes = args.batch_sizes or [64]
    return args


def frameworks(model, args):
    """The frameworks timed on ``model``: xpnn, PyTorch if wanted and installed, the seed's code
    if it has one (not the loop convolution with --quick: seconds per step)."""
    names = ["xpnn"]
    if args.torch:
        names.append("torch")
    if model in runners.SEED_RUNNERS and not (args.quick and model == "cnn"):
        names.append("seed")
    return names


def time_steps(model, batch_size, names, x, y, args):
    """Median seconds per step of each framework, alternating blocks; also returns the xpnn model."""
    host = mnist.batches(x, y, batch_size, POOL)
    made, tasks = {}, {}
    for name in names:
        runner = made[name] = runners.make(name, model, batch_size)
        fn = timing.cycling(runner.step, [runner.convert(xb, yb) for xb, yb in host])
        if name == "seed" and model == "cnn":
            tasks[name] = (fn, 1, SEED_CONV_STEPS)
        else:
            calls = timing.block_size(fn, warmup=2 if args.quick else 5, block_seconds=0.05 if args.quick else 0.3)
            tasks[name] = (fn, calls, args.repeats)
    times = timing.alternate(tasks, max(blocks for _, _, blocks in tasks.values()), pause=0.05 if args.quick else BLOCK_PAUSE)
    return {name: sorted(t) for name, t in times.items()}, made["xpnn"].model


def time_epochs(model, batch_size, names, args):
    """Each framework's epochs, alternating, each in its own process (time and peak RSS)."""
    images = 4 * batch_size if args.quick else None
    if images is None and model in runners.WIDER and not args.full_epochs:
        images = runners.SHORT_EPOCH_BATCHES * batch_size  # a short epoch: its time extrapolated, its peak RSS as it is
    runs = {name: [] for name in names}
    for rep in range(args.epoch_repeats):
        for name in names:
            print(f"  epoch {rep + 1}/{args.epoch_repeats}: {name}", file=sys.stderr, flush=True)
            runs[name].append(epoch.run(name, model, batch_size, args.data_dir, seed=rep, images=images))
    return runs


def bench_config(model, batch_size, x, y, args):
    """Steps, epochs and GEMM work of one model at one batch size (floors come later: :func:`add_floors`).
    A model timed on random data has no epochs: its epoch is extrapolated from the steps."""
    meter = contention.Meter()
    names = frameworks(model, args)
    steps, xpnn_model = time_steps(model, batch_size, names, x, y, args)
    gemms = gemm.step_gemms(gemm.layer_gemms(xpnn_model, x[:1]), batch_size)
    step_flop = gemm.flops(gemms)
    n_train = runners.RANDOM_DATA[model][2] if model in runners.RANDOM_DATA else len(x)
    epoch_flop = step_flop / batch_size * n_train
    extrapolate = set(names) if model in runners.RANDOM_DATA else {"seed"} if model == "cnn" else set()
    epochs = time_epochs(model, batch_size, [n for n in names if n not in extrapolate], args)
    fws = {}
    for name in names:
        step_s = timing.median(steps[name])
        f = fws[name] = {
            "step_s": step_s,
            "step_quartiles_s": [steps[name][len(steps[name]) // 4], steps[name][3 * len(steps[name]) // 4]],
            "steps_timed": len(steps[name]),
        }
        if name in epochs:
            runs = epochs[name]
            seconds = [r["seconds"] * n_train / r["images"] for r in runs]
            fullest = max(runs, key=lambda r: r["peak_rss_mib"])
            f.update(
                epoch_s=timing.median(seconds),
                epoch_runs_s=seconds,
                epoch_extrapolated=runs[0]["images"] < n_train,
                **{k: fullest[k] for k in ("peak_rss_mib", "start_rss_mib", "load_peak_rss_mib")},
            )
        else:
            f.update(epoch_s=step_s * n_train / batch_size, epoch_extrapolated=True)
    entry = {
        "model": model,
        "batch_size": batch_size,
        "data": "random" if model in runners.RANDOM_DATA else "mnist",
        "gemm": {
            "step_flop": step_flop,
            "epoch_flop": epoch_flop,
            "shapes_epoch_s": gemm.shape_seconds(gemms) * n_train / batch_size,
            "gemms": gemms,
        },
        "frameworks": fws,
        "others_cpu": meter.others(),
    }
    entry["ratios"] = report.ratios(entry)
    return entry


def add_floors(entry, peak):
    """The GEMM floor of an epoch at the ``peak`` rate, and the share of it each framework reaches."""
    g = entry["gemm"]
    g["floor_epoch_s"] = g["epoch_flop"] / peak
    for f in entry["frameworks"].values():
        f["gemm_fraction_step"] = g["step_flop"] / peak / f["step_s"]
        f["gemm_fraction_epoch"] = g["floor_epoch_s"] / f["epoch_s"]


def pin_threads(threads, argv):
    """Run this command again with every BLAS/OpenMP pool sized ``threads`` (pools read it when loaded)."""
    if os.environ.get("OMP_NUM_THREADS") != str(threads):
        env = dict(os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        os.execve(sys.executable, [sys.executable, "-m", "bench", *argv], env)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        pin_threads(args.threads, argv)
    args.threads = runners.THREADS
    start, meter = time.perf_counter(), contention.Meter()
    info = report.machine()
    args.torch = not args.no_torch and info["torch"] is not None
    if not args.torch:
        why = "left out (--no-torch)" if args.no_torch else "not installed (pip install torch==2.13.0 to compare)"
        print(f"PyTorch {why}", file=sys.stderr)
    peaks = [gemm.peak_rate()]
    results = []
    for model in args.models:
        x, y = (None, None) if model in runners.RANDOM_DATA else mnist.load(args.data_dir, model)
        for batch_size in args.batch_sizes or BATCH_SIZES[model]:
            print(f"{model}, batch {batch_size}", file=sys.stderr, flush=True)
            if model in runners.RANDOM_DATA:
                x, y = runners.random_data(model, batch_size)
            results.append(bench_config(model, batch_size, x, y, args))
    peaks.append(gemm.peak_rate())
    for entry in results:
        add_floors(entry, max(peaks))
    out = {
        "machine": info,
        "settings": {k: getattr(args, k) for k in SETTINGS},
        "gemm": {"size": gemm.PEAK_SIZE, "peak_flops": max(peaks), "peak_flops_at_start_and_end": peaks},
        "results": results,
    }
    out["targets"] = report.targets(results)
    out["wall_s"] = time.perf_counter() - start
    out["others_cpu"] = meter.others()
    out["machine"]["load_average_at_end"] = list(os.getloadavg())
    print(report.table(out))
    print(f"\nfinished in {out['wall_s'] / 60:.1f} min; JSON written to {args.out}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)


if __name__ == "__main__":
    try:
        main()
    except XpnnError as exc:  # missing MNIST files, most likely
        sys.exit(f"bench: {exc}")
