"""The benchmark's output: the machine it ran on, the targets of issues 5 and 20 checked against the
measurements, a table for people and a JSON file for tools."""

import datetime
import os
import platform

import numpy as np

from .runners import SHORT_EPOCH_BATCHES

LABELS = {"xpnn": "xpnn (NumPy)", "torch": "PyTorch CPU", "seed": "seed (NumPy f64)"}
SEED_LABELS = {"mlp": "seed f64 MLP", "cnn": "seed loop conv"}
NOISY = 0.05  # share of the CPU taken by other processes above which a measurement is flagged


def machine():
    """Cores, CPU model, BLAS and library versions, date and load, for the JSON header."""
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "blas": _blas(),
        "numpy": np.__version__,
        "torch": torch_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": list(os.getloadavg()),
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _blas():
    """NumPy's BLAS with its thread count (threadpoolctl, when installed), else numpy.show_config."""
    try:
        from threadpoolctl import threadpool_info
        return [
            {k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "filepath")}
            for pool in threadpool_info() if pool.get("user_api") == "blas"
        ]
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [{"internal_api": blas.get("name"), "version": blas.get("version")}]


def _ratio(a, b):
    return a / b if a is not None and b else None


def ratios(entry):
    """xpnn/torch and seed/xpnn time ratios per step and per epoch (None where not measured)."""
    fw = entry["frameworks"]
    return {
        f"{a}/{b}": {key: _ratio(fw.get(a, {}).get(f"{key}_s"), fw.get(b, {}).get(f"{key}_s")) for key in ("step", "epoch")}
        for a, b in (("xpnn", "torch"), ("seed", "xpnn"))
    }


def _target(name, measured, limit, at_least=False):
    met = None if measured is None else (measured >= limit if at_least else measured <= limit)
    return {"target": name, "measured": measured, "limit": limit, "met": met}


RATIO_TARGETS = {("mlp", 64): 0.5, ("mlp", 256): 1.0, ("cnn", 64): 0.6, ("lenet", 128): 0.8}
# Issue 20 (wider networks): xpnn/torch per training step, and every model's epoch within 2x its GEMM floor
STEP_TARGETS = {("cnn3264", 128): 0.8, ("torchmnist", 64): 0.7, ("resnet20", 128): 0.9}
FLOOR_MULTIPLE = 2.0


def targets(results):
    """Issues 5's and 20's targets, checked on every model and batch size measured, in the results' order."""
    out = []
    for e in results:
        where = f"{e['model']} b{e['batch_size']}"
        step_limit = STEP_TARGETS.get((e["model"], e["batch_size"]))
        if step_limit is not None:
            out.append(_target(f"{where}: xpnn/torch per step <= {step_limit}", ratios(e)["xpnn/torch"]["step"], step_limit))
        floor = e["gemm"].get("floor_epoch_s")
        epoch_s = e["frameworks"]["xpnn"].get("epoch_s")
        out.append(_target(f"{where}: xpnn epoch / GEMM floor <= {FLOOR_MULTIPLE:g}", _ratio(epoch_s, floor), FLOOR_MULTIPLE))
        if e.get("data") == "random":  # ResNet-20 (issue 17): no issue 5 target, no epoch memory
            continue
        where = f"{e['model']} b{e['batch_size']}"
        xpnn, torch = e["frameworks"]["xpnn"], e["frameworks"].get("torch", {})
        r = ratios(e)
        limit = RATIO_TARGETS.get((e["model"], e["batch_size"]))
        if limit is not None:
            for key in ("step", "epoch"):
                out.append(_target(f"{where}: xpnn/torch per {key} <= {limit}", r["xpnn/torch"][key], limit))
        if e["model"] == "mlp":
            out.append(_target(f"{where}: xpnn epoch / GEMM floor <= 1.5", _ratio(xpnn.get("epoch_s"), e["gemm"]["floor_epoch_s"]), 1.5))
        if e["model"] == "cnn" and "seed" in e["frameworks"]:
            for key in ("step", "epoch"):
                out.append(_target(f"{where}: seed loop conv / xpnn per {key} >= 1000", r["seed/xpnn"][key], 1000, at_least=True))
        out.append(_target(f"{where}: epoch peak RSS xpnn/torch <= 1", _ratio(xpnn.get("peak_rss_mib"), torch.get("peak_rss_mib")), 1.0))
    return out


def _growth(f):
    """MiB the epoch added on top of the RSS it started from (data, model and libraries loaded)."""
    return f["peak_rss_mib"] - f["start_rss_mib"] if f.get("peak_rss_mib") else None


def _fmt(value, spec, scale=1.0, prefix=""):
    return "-" if value is None else prefix + format(value * scale, spec)


def table(report):
    """The results as aligned text: one block per model and batch size, then the targets."""
    peak = report["gemm"]["peak_flops"]
    size = report["gemm"]["size"]
    lines = [f"NumPy float32 GEMM rate: {peak / 1e9:.0f} GFLOP/s (best {size}x{size} matmul, at the start and end of the run)"]
    if (report["others_cpu"] or 0) > NOISY:
        lines.append(f"! other processes took {report['others_cpu']:.0%} of the CPU during the run: timings are inflated")
    head = (
        f"  {'framework':<18}{'step ms':>9}{'epoch s':>9}{'step/torch':>11}{'epoch/torch':>12}"
        f"{'RSS MiB':>9}{'+epoch':>8}{'GEMM% step':>11}{'GEMM% epoch':>12}"
    )
    for e in report["results"]:
        g = e["gemm"]
        lines += [
            "",
            (
                f"{e['model']}, batch {e['batch_size']}: {g['step_flop'] / e['batch_size'] / 1e6:.2f} MFLOP/image in GEMMs; "
                f"GEMM floor {g['floor_epoch_s']:.2f} s/epoch at the peak rate, {g['shapes_epoch_s']:.2f} s at the model's own GEMM shapes"
            ),
            head,
        ]
        if (e["others_cpu"] or 0) > NOISY:
            lines.insert(-1, f"  ! other processes took {e['others_cpu']:.0%} of the CPU meanwhile: these numbers are not clean")
        torch = e["frameworks"].get("torch", {})
        for name, f in e["frameworks"].items():
            label = SEED_LABELS.get(e["model"], LABELS[name]) if name == "seed" else LABELS[name]
            approx = "~" if f.get("epoch_extrapolated") else ""
            lines.append(
                f"  {label:<18}{_fmt(f['step_s'], '.2f', 1e3):>9}{_fmt(f.get('epoch_s'), '.2f', prefix=approx):>9}"
                f"{_fmt(_ratio(f['step_s'], torch.get('step_s')) if name != 'torch' else None, '.2f'):>11}"
                f"{_fmt(_ratio(f.get('epoch_s'), torch.get('epoch_s')) if name != 'torch' else None, '.2f'):>12}"
                f"{_fmt(f.get('peak_rss_mib'), '.0f', prefix=approx):>9}{_fmt(_growth(f), '.0f', prefix='+'):>8}"
                f"{_fmt(f.get('gemm_fraction_step'), '.0%'):>11}{_fmt(f.get('gemm_fraction_epoch'), '.0%'):>12}"
            )
    lines += [
        "",
        "step: median over alternating blocks of steps on pre-gathered batches; epoch: 60,000 images, each",
        "framework in its own process (xpnn: DataLoader(shuffle=True) + Trainer.fit), median of the runs.",
        "RSS: peak resident memory during the epoch; +epoch: growth over the RSS at its start.",
        "GEMM%: the step's (epoch's) GEMM FLOPs at the NumPy float32 rate, divided by the time measured.",
        "~ extrapolated from a few steps, not a full epoch (the loop convolution; --quick; ResNet-20;",
        f"  cnn3264 and torchmnist: their first {SHORT_EPOCH_BATCHES} batches in the epoch's own process, unless --full-epochs).",
    ]
    if any(e.get("data") == "random" for e in report["results"]):
        lines.append("resnet20: random data of CIFAR-10's shape (3x32x32, 10 classes), SGD lr 0.1 momentum 0.9; epoch = 50,000 images.")
    lines += [
        "",
        "targets (issues 5 and 20):",
    ]
    for t in report["targets"]:
        met = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"  {t['target']:<52}{_fmt(t['measured'], '.3g'):>10}   {met}")
    return "\n".join(lines)
