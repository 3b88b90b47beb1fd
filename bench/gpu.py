"""python -m bench.gpu: issue 13's GPU check in one command, sized for one device call.

Steps, in order, each in its own process (a CUDA fault in one cannot poison the next) and each
under a time limit; a failure is printed in full and the next step still runs:

1. pytest     the whole suite (with CuPy present, the cupy backend and the GPU tests run too)
2. sanitizer  compute-sanitizer memcheck over a few training steps of every model, CuPy's
              memory pool off; racecheck once on LeNet
3. parity     CPU against GPU, same seed: identical initial weights, the first 50 Adam losses,
              and `xpnn train` for one epoch (MLP, LeNet) within 0.3 accuracy points
4. hostsync   training steps under cupyx.allow_synchronize(False)
5. bench      xpnn on CuPy against PyTorch eager on the same GPU, per step and per full epoch,
              device events, alternating; with --graph also xpnn's step captured in a CUDA graph
6. graph      (--graph) the captured step against the uncaptured one, bit for bit

Without a GPU (or with --dry-run) it runs its own logic on the CPU in about a minute: the builders
(with the PyTorch twins), the parity comparison between two CPU backends on the bundled digits,
the timing and report code with NumPy against PyTorch CPU on tiny sizes, the capture logic
through a stand-in, and prints "SKIPPED: <reason>" for every GPU part. bench/GPU.md says how
to run it on the device machine. Subcommand ``python -m bench.gpu steps --model lenet --steps 3
--device cuda`` runs a few training steps alone (what the sanitizer watches)."""

import argparse
import contextlib
import gc
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOCAL_DATA = ROOT / ".gpu_data" / "mnist"
SHARED_DATA = ROOT.parent / "shared" / "data" / "mnist"
MODELS = ("mlp", "cnn", "lenet", "torchnet")
LABELS = {"mlp": "MLP 784-256-10", "cnn": "seed CNN", "lenet": "LeNet", "torchnet": "PyTorch MNIST example"}
BATCH_SIZES = (64, 256, 1024)
STEPS = ("info", "pytest", "sanitizer", "parity", "hostsync", "bench", "graph")
# Seconds: the most a step may take, and what is held back for it while earlier steps run.
LIMITS = {"info": (60, 10), "pytest": (240, 60), "sanitizer": (150, 30), "parity": (150, 40),
          "hostsync": (60, 10), "bench": (240, 90), "graph": (90, 20)}
TRAIN_IMAGES = 60000
LR = 1e-3
LOSS_RTOL = 1e-4  # the 50-step loss curves, CPU against GPU: float32 round-off, not a different computation
ACC_POINTS = 0.3
TWIN_RTOL = 1e-4  # xpnn against its PyTorch twin with the same weights, IEEE float32 on both
RACECHECK_NOTE = ("no xpnn kernel uses shared memory, atomics or __syncthreads (xpnn/kernels/cuda/common.cuh), so racecheck "
                  "has nothing of xpnn's to check; it runs once on LeNet as a cheap confirmation (it also sees CuPy's and cuBLAS's kernels)")


# ---- small helpers -----------------------------------------------------------------------------


def say(*parts):
    print(*parts, flush=True)


def skipped(reason, **details):
    say(f"SKIPPED: {reason}")
    return dict(status="SKIPPED", summary=f"SKIPPED: {reason}", **details)


def default_data_dir():
    """The repo-local copy the device run uses, else ../shared/data/mnist (this machine)."""
    for path in (LOCAL_DATA, SHARED_DATA):
        if (path / "train-images-idx3-ubyte.gz").exists():
            return path
    return LOCAL_DATA


def has_mnist(path):
    return path is not None and all((Path(path) / f).exists() for f in (
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


def probe_cupy():
    """(cupy, None) when CuPy sees a GPU, else (None, why not)."""
    try:
        import cupy
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver
        return None, f"CuPy finds no GPU ({type(exc).__name__}: {exc})"
    if count == 0:
        return None, "CuPy sees no GPU"
    return cupy, None


def probe_torch(want_cuda):
    """(torch, None) when PyTorch is importable (and sees CUDA if ``want_cuda``), else (None, why not)."""
    try:
        import torch
    except ImportError as exc:
        return None, f"PyTorch is not installed ({exc})"
    if want_cuda and not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} sees no CUDA device"
    return torch, None


def find_sanitizer():
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    import glob

    for pattern in ("/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda/compute-sanitizer/compute-sanitizer",
                    "/usr/local/cuda-*/bin/compute-sanitizer", "/opt/nvidia/*/compute-sanitizer/compute-sanitizer"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[-1]
    return None


def stream_run(cmd, timeout=None):
    """Run ``cmd`` in the repository root, its output streamed through as it comes; returns
    (exit status, the whole output, timed out). On timeout the command and its children are killed."""
    say("$ " + " ".join(map(str, cmd)))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    proc.wait()
    if timer:
        timer.cancel()
    sys.stdout.flush()
    return proc.returncode, "".join(lines), timed_out.is_set()


def rel_diff(a, b):
    """max |a - b| / max(|b|, tiny), elementwise, as a float."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))) if a.size else 0.0


def norm_rel(a, b):
    """||a - b|| / ||b||."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def fmt(value, spec, scale=1.0):
    return "-" if value is None else format(value * scale, spec)


# ---- models --------------------------------------------------------------------------------------


def build_xpnn(name, device):
    """The xpnn model ``name`` on ``device``: mlp, cnn, lenet from xpnn.models, or "torchnet", the
    network of PyTorch's MNIST example (conv 32 3x3, conv 64 3x3, max pool 2, dropout 0.25, fc
    9216-128, dropout 0.5, fc 128-10) built from xpnn.nn layers."""
    from xpnn import nn
    from xpnn.models import build_model

    if name != "torchnet":
        return build_model(name, (1, 28, 28), 10, device=device)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, xp=device), nn.ReLU(), nn.Conv2d(32, 64, 3, xp=device), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(9216, 128, xp=device), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10, xp=device),
    ).to(device)


def build_torch(name):
    """The PyTorch twin of :func:`build_xpnn` (bench/torch_models.py for the first three)."""
    from torch import nn

    if name != "torchnet":
        from .torch_models import build

        return build(name)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )


def copy_weights_to_torch(model, twin):
    """Load the xpnn model's parameters into its PyTorch twin (the same layouts, Linear's (out, in)
    included); raises if the two do not line up."""
    import torch

    from xpnn import backend

    mine = [backend.to_numpy(p.data) for p in model.parameters()]
    theirs = list(twin.parameters())
    if len(mine) != len(theirs):
        raise AssertionError(f"{len(mine)} xpnn parameters against {len(theirs)} in the PyTorch twin")
    with torch.no_grad():
        for i, (a, t) in enumerate(zip(mine, theirs)):
            if tuple(a.shape) != tuple(t.shape):
                raise AssertionError(f"parameter {i}: xpnn {a.shape} against PyTorch {tuple(t.shape)}")
            t.copy_(torch.from_numpy(np.ascontiguousarray(a)))


def twin_check(name, device, torch_device, batch=16):
    """The same weights in xpnn and in PyTorch give the same logits (eval mode): ||d|| / ||torch||."""
    import torch

    import xpnn
    from xpnn import backend

    xpnn.manual_seed(0)
    model = build_xpnn(name, device).eval()
    twin = build_torch(name).to(torch_device).eval()
    copy_weights_to_torch(model, twin)
    x = np.random.default_rng(1).normal(size=(batch, 1, 28, 28)).astype(np.float32)
    mine = backend.to_numpy(model(backend.asarray(x, model.xp, device=model.device)))
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x).to(torch_device)).cpu().numpy()
    n_x = model.num_parameters()
    n_t = sum(p.numel() for p in twin.parameters())
    return {"params_xpnn": n_x, "params_torch": n_t, "logits_rel_err": norm_rel(mine, theirs)}


def set_torch_precision(torch, mode):
    """IEEE float32 in PyTorch's matmuls and convolutions (its cuDNN convolutions default to TF32;
    CuPy uses TF32 only with CUPY_TF32=1), or PyTorch's defaults with mode "default". Returns
    what was read back (new API only: reading the legacy flags after setting the new ones raises)."""
    b = torch.backends
    new_api = hasattr(b.cuda.matmul, "fp32_precision") and hasattr(getattr(b.cudnn, "conv", None), "fp32_precision")
    if mode == "ieee":
        if new_api:
            b.cuda.matmul.fp32_precision = "ieee"
            b.cudnn.conv.fp32_precision = "ieee"
            b.cudnn.rnn.fp32_precision = "ieee"
        else:
            b.cuda.matmul.allow_tf32 = False
            b.cudnn.allow_tf32 = False
    if new_api:
        return {"matmul": b.cuda.matmul.fp32_precision, "cudnn_conv": b.cudnn.conv.fp32_precision, "cudnn_benchmark": b.cudnn.benchmark}
    return {"matmul_allow_tf32": b.cuda.matmul.allow_tf32, "cudnn_allow_tf32": b.cudnn.allow_tf32, "cudnn_benchmark": b.cudnn.benchmark}


def random_batch(model, batch, seed=0):
    from xpnn import backend

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)
    return backend.asarray(x, model.xp, device=model.device), backend.asarray(y, model.xp, device=model.device)


def make_step(model, loss_fn, opt, full_backward=False):
    """One training step as Trainer makes it: forward, loss, zero_grad, backward, update; returns
    the 0-d loss on the device. ``full_backward`` also computes the input's gradient."""
    forward = model.forward
    backward = model.backward if full_backward else model.backward_params

    def step(xb, yb):
        loss = loss_fn(forward(xb), yb)
        opt.zero_grad()
        backward(loss_fn.backward())
        opt.step()
        return loss

    return step


# ---- `steps`: a few training steps alone (what compute-sanitizer watches) --------------------------


def run_steps(models, steps, device, batch_size, no_pool):
    """Adam then SGD (Nesterov momentum) steps of each model on random data, alternating the
    parameter-only backward and the full one (col2im of the first layer too), then an eval forward;
    every loss read back at the end and checked finite."""
    import xpnn
    from xpnn import backend, nn, optim

    if no_pool and device.startswith("cuda"):
        import cupy

        cupy.cuda.set_allocator(None)  # every array its own cudaMalloc: memcheck sees an overrun past its end
        cupy.cuda.set_pinned_memory_allocator(None)
        say("steps: CuPy memory pool off (plain cudaMalloc per array)")
    bad = []
    for name in models:
        xpnn.manual_seed(0)
        model = build_xpnn(name, device)
        x, y = random_batch(model, batch_size)
        loss_fn = nn.CrossEntropyLoss()
        losses = []
        for opt in (optim.Adam(model.parameters(), lr=LR), optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True)):
            for i in range(steps):
                losses.append(make_step(model, loss_fn, opt, full_backward=i % 2 == 1)(x, y))
        model.eval()
        logits = model(x)
        model.train()
        backend.synchronize(model.xp)
        values = [float(backend.to_numpy(v)) for v in losses]
        finite = all(math.isfinite(v) for v in values) and bool(np.isfinite(backend.to_numpy(logits)).all())
        say(f"steps: {name} on {device}, batch {batch_size}: {len(values)} steps, losses {values[0]:.4f} .. {values[-1]:.4f}"
            f"{'' if finite else '  NOT FINITE'}")
        if not finite:
            bad.append(name)
    if device.startswith("cuda"):
        import cupy

        cupy.cuda.runtime.deviceSynchronize()
    if bad:
        raise SystemExit(f"steps: non-finite values in {', '.join(bad)}")
    say("steps: done")


# ---- step 0: info ----------------------------------------------------------------------------------


def step_info(args):
    """Versions, the GPU, the tools; decides nothing by itself."""
    import platform

    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for mod in ("numba", "array_api_compat", "array_api_strict", "tqdm"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as exc:
            info[mod] = f"absent ({type(exc).__name__})"
    cupy, why = probe_cupy()
    info["gpu"] = cupy is not None
    if cupy is None:
        info["cupy"] = why
    else:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info.update(cupy=cupy.__version__, gpu_name=name, gpu_memory_gib=round(props["totalGlobalMem"] / 2**30, 1),
                    gpu_sms=props.get("multiProcessorCount"), compute_capability=f"{props['major']}.{props['minor']}",
                    cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(), cuda_driver=cupy.cuda.runtime.driverGetVersion(),
                    cupy_tf32=os.environ.get("CUPY_TF32", "0"))
    torch, why_t = probe_torch(want_cuda=False)
    info["torch"] = torch.__version__ if torch else why_t
    if torch:
        info["torch_cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["torch_gpu_name"] = torch.cuda.get_device_name(0)
    info["compute_sanitizer"] = find_sanitizer()
    info["nvcc"] = shutil.which("nvcc") or (str(Path("/usr/local/cuda/bin/nvcc")) if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = (q.stdout or q.stderr).strip()
    data = Path(args.data_dir) if args.data_dir else None
    info["data_dir"] = str(data)
    info["mnist_found"] = has_mnist(data)
    for key, value in info.items():
        say(f"  {key}: {value}")
    return dict(status="PASS", summary=f"GPU: {info.get('gpu_name', 'none')} ({info['cupy']}); torch {info['torch']}", info=info)


# ---- step 1: pytest ---------------------------------------------------------------------------------


def step_pytest(args):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10", *args.pytest_args.split()]
    if args.dry_run:
        cmd.append("tests/test_host_syncs.py")
        say("SKIPPED: the whole suite (--dry-run: it is CI's on the CPU); one file runs to exercise this step: " + " ".join(cmd[2:]))
    cupy, why = probe_cupy()
    say(("CuPy sees a GPU: the cupy backend and GPU tests run" if cupy else f"no GPU ({why}): the cupy backend and GPU tests skip"))
    start = time.perf_counter()
    rc, out, timed_out = stream_run(cmd, max(10, args.time_limit - 5))
    seconds = time.perf_counter() - start
    tally = next((line.strip("= \n") for line in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed|error)", line)), None)
    status = "PASS" if rc == 0 else ("TIMEOUT" if timed_out else "FAIL")
    summary = (f"{tally or 'no tally line'} (exit {rc}{', timed out' if timed_out else ''})"
               + (" [dry-run: tests/test_host_syncs.py only]" if args.dry_run else "")
               + ("" if cupy else " [no GPU: cupy tests skipped]"))
    return dict(status=status, summary=summary, tally=tally, exit_code=rc, seconds=seconds, gpu_tests=cupy is not None, dry_run=args.dry_run)


# ---- step 2: compute-sanitizer -----------------------------------------------------------------------


def _sanitize(sanitizer, tool, models, steps, batch, timeout):
    # API calls that return an error are left to the program (CuPy raises on them); probing calls
    # that fail on purpose would otherwise count as errors.
    cmd = [sanitizer, "--tool", tool, "--error-exitcode", "3", "--print-limit", "30", "--report-api-errors", "no",
           sys.executable, "-m", "bench.gpu", "steps", "--model", ",".join(models), "--steps", str(steps),
           "--device", "cuda", "--batch-size", str(batch), "--no-pool"]
    start = time.perf_counter()
    rc, out, timed_out = stream_run(cmd, timeout)
    if timed_out:
        return {"tool": tool, "models": models, "status": "TIMEOUT", "seconds": timeout, "summary": f"{tool}: stopped after {timeout} s"}
    summary_line = next((line.strip() for line in reversed(out.splitlines()) if "SUMMARY" in line), None)
    errors = re.search(r"ERROR SUMMARY: (\d+) error", out)
    hazards = re.search(r"RACECHECK SUMMARY: (\d+) hazard", out)
    count = int(errors.group(1)) if errors else (int(hazards.group(1)) if hazards else None)
    ok = rc == 0 and count in (0, None) and "steps: done" in out
    return {"tool": tool, "models": models, "status": "PASS" if ok else "FAIL", "exit_code": rc, "errors": count,
            "seconds": time.perf_counter() - start, "summary": f"{tool} on {','.join(models)}: {summary_line or 'no summary line'} (exit {rc})"}


def step_sanitizer(args):
    cupy, why = probe_cupy()
    sanitizer = find_sanitizer()
    models = args.models
    say("note: " + RACECHECK_NOTE)
    say("note: CuPy's memory pool is off in the checked process, so each array is its own cudaMalloc and memcheck sees "
        "an access past an array's end (with the pool it could land, unseen, in a neighbouring pooled block)")
    if args.dry_run or cupy is None or sanitizer is None:
        reason = "--dry-run" if args.dry_run else (why if cupy is None else "compute-sanitizer not found on PATH or in /usr/local/cuda")
        result = skipped(f"compute-sanitizer memcheck/racecheck ({reason}); the steps entry point runs on the CPU instead")
        cmd = [sys.executable, "-m", "bench.gpu", "steps", "--model", ",".join(models), "--steps", "2", "--device", "cpu", "--batch-size", "5"]
        rc = stream_run(cmd, max(10, args.time_limit - 5))[0]
        result["cpu_steps_exit_code"] = rc
        if rc:
            result.update(status="FAIL", summary=f"{result['summary']}; but the CPU steps failed (exit {rc})")
        return result
    deadline = time.monotonic() + args.time_limit
    runs = [_sanitize(sanitizer, "memcheck", models, 3, 37, max(30, int(deadline - time.monotonic() - 45)))]
    runs.append(_sanitize(sanitizer, "racecheck", ["lenet"], 1, 8, max(20, int(deadline - time.monotonic() - 5))))
    memcheck_ok = runs[0]["status"] == "PASS"
    status = "PASS" if memcheck_ok and all(r["status"] == "PASS" for r in runs) else "FAIL"
    return dict(status=status, summary="; ".join(r["summary"] for r in runs), runs=runs, note=RACECHECK_NOTE)


# ---- step 3: parity ----------------------------------------------------------------------------------


def loss_curve(name, device, x, y, steps, seed=0):
    """The first ``steps`` training losses of ``xpnn train``'s setup (its seed, model, Adam,
    learning rate, batch size, shuffled loader and per-step cosine schedule over one epoch),
    read back once at the end; also the final weights."""
    import xpnn
    from xpnn import backend, cli, nn
    from xpnn.data import DataLoader
    from xpnn.models import build_model

    xpnn.manual_seed(seed)
    model = build_model(name, tuple(x.shape[1:]), 10, device=device)
    defaults = cli.MODEL_DEFAULTS[name]
    opt = cli.OPTIMIZERS["adam"](model.parameters(), defaults["lr"])
    loader = DataLoader(x, y, batch_size=defaults["batch_size"], shuffle=True, seed=seed, device=device)
    scheduler = cli.SCHEDULES["cosine"](opt, 1, len(loader))
    step = make_step(model, nn.CrossEntropyLoss(), opt)
    losses = []
    while len(losses) < steps:
        for xb, yb in loader:
            losses.append(step(xb, yb))
            if scheduler is not None:
                scheduler.step()
            if len(losses) == steps:
                break
    values = np.array([float(backend.to_numpy(v)) for v in losses])
    return values, model.state_dict()


def initial_weights(name, device, image_shape, seed=0):
    import xpnn
    from xpnn.models import build_model

    xpnn.manual_seed(seed)
    return build_model(name, image_shape, 10, device=device).state_dict()


def start_cli_run(name, device, dataset, data_dir, out, threads):
    """``xpnn train`` for one epoch in a child process (its output to out/log.txt)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "xpnn", "train", "--dataset", dataset, "--model", name, "--epochs", "1", "--device", device,
           "--seed", "0", "--out", str(out), "--no-progress"]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(out / "log.txt", "w")
    return cmd, subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env), log


def step_parity(args):
    from xpnn.data import load_dataset

    cupy, why = probe_cupy()
    if args.dry_run or cupy is None:
        if not args.dry_run:
            return skipped(f"CPU/GPU parity ({why})")
        try:
            import array_api_strict  # noqa: F401

            other = "array_api_strict"
        except ImportError:
            other = "cpu"
        say(f"SKIPPED: cpu against cuda ({why or '--dry-run'}); the same comparison runs cpu against {other} on the bundled digits")
        devices, dataset, data_dir, curve_steps = ("cpu", other), "digits", None, 20
    else:
        data_dir = Path(args.data_dir) if args.data_dir else None
        if not has_mnist(data_dir):
            return dict(status="FAIL", summary=f"MNIST not found at {data_dir} (copy ../shared/data/mnist into .gpu_data/mnist, bench/GPU.md)")
        devices, dataset, data_dir, curve_steps = ("cpu", "cuda"), "mnist", data_dir, 50
    models = [m for m in ("mlp", "lenet") if m in args.models] or ["mlp", "lenet"]
    work = Path(tempfile.mkdtemp(prefix="xpnn-parity-"))
    threads = max(1, (os.cpu_count() or 2) // (2 * len(models)))
    runs = {}
    for name in models:  # the one-epoch CLI runs go in the background while the curves are computed here
        for device in devices:
            runs[(name, device)] = start_cli_run(name, device, dataset, data_dir, work / f"{name}-{device.replace(':', '_')}", threads)
            say(f"started: {' '.join(runs[(name, device)][0])}")
    train = load_dataset(dataset, train=True, root=data_dir, download=False)
    x, y = train.arrays()
    rows, ok = [], True
    for name in models:
        first = [initial_weights(name, d, tuple(x.shape[1:])) for d in devices]
        init_equal = first[0].keys() == first[1].keys() and all(np.array_equal(first[0][k], first[1][k]) for k in first[0])
        curves = [loss_curve(name, d, x, y, curve_steps) for d in devices]
        (a, wa), (b, wb) = curves
        row = {"model": name, "devices": list(devices), "initial_weights_equal": bool(init_equal),
               "curve_steps": curve_steps, "losses_first_device": a.tolist(), "losses_second_device": b.tolist(),
               "loss_max_rel_diff": rel_diff(b, a), "loss_first_step_rel_diff": rel_diff(b[:1], a[:1]),
               "weights_after_curve_max_rel_norm_diff": max(norm_rel(wb[k], wa[k]) for k in wa)}
        say(f"{name}: initial weights {'identical' if init_equal else 'DIFFER'}; {curve_steps} losses {devices[0]} vs {devices[1]}: "
            f"max rel diff {row['loss_max_rel_diff']:.2e} (first step {row['loss_first_step_rel_diff']:.2e}); "
            f"weights after them differ by {row['weights_after_curve_max_rel_norm_diff']:.2e} (||d||/||w||, worst tensor)")
        rows.append(row)
    deadline = time.monotonic() + max(10, args.time_limit - 20)
    for (name, device), (cmd, proc, log) in runs.items():
        try:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    for row in rows:
        name = row["model"]
        accs = {}
        for device in devices:
            cmd, proc, _ = runs[(name, device)]
            out = work / f"{name}-{device.replace(':', '_')}"
            text = (out / "log.txt").read_text()
            say(f"--- xpnn train --model {name} --device {device} (exit {proc.returncode}):\n{text.rstrip()}")
            history = out / "history.json"
            if proc.returncode == 0 and history.exists():
                h = json.loads(history.read_text())
                accs[device] = {"val_acc": h["val_acc"][-1], "loss": h["loss"][-1], "epoch_time_s": h["epoch_time"][-1]}
        row["train_one_epoch"] = accs
        if len(accs) == 2:
            (d0, r0), (d1, r1) = accs.items()
            row["accuracy_points_diff"] = 100 * abs(r0["val_acc"] - r1["val_acc"])
        else:
            row["accuracy_points_diff"] = None
        row["pass"] = bool(row["initial_weights_equal"] and row["loss_max_rel_diff"] <= LOSS_RTOL
                           and row["accuracy_points_diff"] is not None and row["accuracy_points_diff"] <= ACC_POINTS)
        ok &= row["pass"]
    shutil.rmtree(work, ignore_errors=True)
    lines = []
    for row in rows:
        acc = row["train_one_epoch"]
        acc_text = " / ".join(f"{d} {100 * r['val_acc']:.2f}%" for d, r in acc.items()) or "no result"
        lines.append(f"{row['model']}: init {'=' if row['initial_weights_equal'] else '!='}, {row['curve_steps']}-step loss rel diff "
                     f"{row['loss_max_rel_diff']:.1e} (<= {LOSS_RTOL:g}), 1-epoch test acc {acc_text} "
                     f"(diff {fmt(row['accuracy_points_diff'], '.2f')} pt <= {ACC_POINTS})")
    for line in lines:
        say(line)
    prefix = f"dry-run ({devices[0]} vs {devices[1]}, {dataset}): " if args.dry_run else ""
    return dict(status="PASS" if ok else "FAIL", summary=prefix + "; ".join(lines), rows=rows, dataset=dataset, devices=list(devices))


# ---- step 4: no host sync -----------------------------------------------------------------------------


def step_hostsync(args):
    """Training steps of every model, Adam and SGD, under cupyx.allow_synchronize(False), after one
    warm-up step (loading a module may synchronise); tests/test_host_syncs.py does the same for
    mlp/cnn/lenet inside step 1, this adds the PyTorch example net (dropout on the device)."""
    import xpnn
    from xpnn import backend, nn, optim

    cupy, why = probe_cupy()
    if args.dry_run or cupy is None:
        result = skipped(f"steps under cupyx.allow_synchronize(False) ({'--dry-run' if args.dry_run else why}); "
                         "the loop runs on NumPy without the guard")
        device, guard = "cpu", contextlib.nullcontext
    else:
        import cupyx

        result, device, guard = None, "cuda", lambda: cupyx.allow_synchronize(False)
    checks = []
    for name in args.models:
        for opt_name in ("adam", "sgd"):
            xpnn.manual_seed(0)
            model = build_xpnn(name, device)
            opt = optim.Adam(model.parameters(), lr=LR) if opt_name == "adam" else optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True)
            step = make_step(model, nn.CrossEntropyLoss(), opt)
            x, y = random_batch(model, 32)
            step(x, y)
            backend.synchronize(model.xp)
            try:
                with guard():
                    for _ in range(3):
                        loss = step(x, y)
                error = None
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            value = float(backend.to_numpy(loss)) if error is None else None
            ok = error is None and math.isfinite(value)
            checks.append({"model": name, "optimizer": opt_name, "ok": ok, "error": error, "loss": value})
            say(f"{name} {opt_name}: {'no host sync' if ok else 'FAILED: ' + str(error)}")
    bad = [f"{c['model']}/{c['optimizer']}" for c in checks if not c["ok"]]
    summary = f"{len(checks) - len(bad)}/{len(checks)} model/optimizer pairs step without a host sync" + (f"; FAILED: {', '.join(bad)}" if bad else "")
    return fold_checks(result, checks, bad, f"but the CPU loop failed on {', '.join(bad)}", summary)


def fold_checks(result, checks, bad, failed_note, summary):
    """A step's result from its per-item ``checks`` (``bad`` names the failed ones): added to
    ``result``, the GPU part's when it ran (``failed_note`` appended to its summary on failure),
    else a result of their own with ``summary``."""
    if result is not None:
        result["checks"] = checks
        if bad:
            result.update(status="FAIL", summary=f"{result['summary']}; {failed_note}")
        return result
    return dict(status="FAIL" if bad else "PASS", summary=summary, checks=checks)


# ---- step 5: the benchmark -----------------------------------------------------------------------------


class Clock:
    """Seconds of ``n`` calls of ``fn``: between two device events on the GPU (CuPy's or PyTorch's,
    on the current stream; the host runs ahead and the end event waits for the queued work), by
    the host clock on the CPU. Also keeps the host seconds of the last measure."""

    def __init__(self, kind):
        self.kind = kind
        self.host_s = None
        if kind == "cupy":
            import cupy

            self.cupy = cupy
        elif kind == "torch":
            import torch

            self.torch = torch

    def measure(self, fn, n=1):
        t0 = time.perf_counter()
        if self.kind == "cupy":
            start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            seconds = self.cupy.cuda.get_elapsed_time(start, end) / 1e3
        elif self.kind == "torch":
            start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            for _ in range(n):
                fn()
            seconds = time.perf_counter() - t0
        self.host_s = time.perf_counter() - t0
        return seconds


class Capture:
    """``fn`` (one training step on fixed buffers) captured once and replayed by ``launch``.

    On CuPy: stream capture into a CUDA graph, on a stream of its own, with a memory pool of its
    own that nothing else allocates from afterwards (so the buffers the graph writes stay its own),
    and under allow_synchronize(False). Elsewhere (the dry run) a stand-in whose launch calls ``fn``
    again, so the logic around it runs on NumPy. ``out`` is what the captured call returned (the
    loss buffer, which each replay refills). Adam's step-dependent scalars (bias corrections) are
    kernel arguments, frozen at capture: replays repeat the captured step number's scalars."""

    def __init__(self, fn, xp):
        from xpnn import backend

        self.fn, self.graph, self.out = fn, None, None
        if not backend.is_cupy(xp):
            self.kind, self.stream, self.pool = "stand-in (re-runs the step)", None, None
            return
        import cupy
        import cupyx

        self.kind = "CUDA graph (CuPy stream capture)"
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()
        self._cupy, self._cupyx = cupy, cupyx

    def warm(self, calls):
        """Run ``calls`` (no-argument functions) eagerly on the capture stream and pool, so that the
        pool holds the blocks the capture will take and every kernel is loaded before it."""
        with self._context(capturing=False):
            for call in calls:
                call()
        self.synchronize()

    @contextlib.contextmanager
    def _context(self, capturing):
        if self.stream is None:
            yield
            return
        # The capture stream is non-blocking: it does not wait for work queued on the default
        # stream (snapshots, restores, batches), so everything before it is finished first.
        self._cupy.cuda.runtime.deviceSynchronize()
        with self._cupy.cuda.using_allocator(self.pool.malloc), self.stream:
            if capturing:
                with self._cupyx.allow_synchronize(False):
                    yield
            else:
                yield

    def run(self, call):
        """``call()`` eagerly on the capture stream (the reference the graph is compared with)."""
        with self._context(capturing=False):
            out = call()
        self.synchronize()
        return out

    def capture(self):
        if self.stream is None:
            return self
        with self._context(capturing=True):
            self.stream.begin_capture()
            try:
                self.out = self.fn()
            except BaseException:
                with contextlib.suppress(Exception):
                    self.stream.end_capture()
                raise
            self.graph = self.stream.end_capture()
        return self

    def launch(self, on_capture_stream=False):
        if self.graph is None:
            with self._context(capturing=False):
                self.out = self.fn()
            return
        self.graph.launch(self.stream if on_capture_stream else None)

    def synchronize(self):
        if self.stream is not None:
            self.stream.synchronize()


def raw_module(xp):
    """NumPy or CuPy itself (for take(..., out=)), behind the array-api-compat namespace."""
    from xpnn import backend

    if backend.is_cupy(xp):
        import cupy

        return cupy
    return np


def snapshot(model, opt):
    """Copies of the parameters and the optimizer's state, to restore in place later."""
    params = list(model.parameters())
    xp = model.xp
    data = [xp.asarray(p.data, copy=True) for p in params]
    state = [{k: (xp.asarray(v, copy=True) if hasattr(v, "shape") else v) for k, v in opt.state.get(p, {}).items()} for p in params]
    return data, state


def restore(model, opt, snap):
    """Write a snapshot back into the same buffers (a captured graph holds their addresses)."""
    data, state = snap
    for p, d, s in zip(model.parameters(), data, state):
        p.data[...] = d
        live = opt.state.setdefault(p, {})
        for k, v in s.items():
            if hasattr(v, "shape") and k in live:
                live[k][...] = v
            else:
                live[k] = v


def has_dropout(model):
    from xpnn import nn

    return any(isinstance(m, (nn.Dropout, nn.Dropout2d)) for m in model.modules())


def host_params(model):
    from xpnn import backend

    return [np.array(backend.to_numpy(p.data), copy=True) for p in model.parameters()]


def compare_params(a, b):
    """(bitwise equal, max |a - b|) over two lists of host arrays."""
    equal = all(np.array_equal(x, y) for x, y in zip(a, b))
    worst = max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0 for x, y in zip(a, b))
    return equal, worst


class PooledRunner:
    """What the framework runners share: steps cycle through pre-gathered device batches
    (``self.pool``) through the subclass's ``_step(xb, yb)``, which returns the loss."""

    def step_next(self):
        xb, yb = self.pool[self._next % len(self.pool)]
        self._next += 1
        self.last_loss = self._step(xb, yb)

    def warm_epoch_shapes(self, images):
        """One step on a batch of the epoch's last (partial) size, so its first use is not timed."""
        tail = images % self.batch_size
        if tail:
            xb, yb = self.pool[0]
            self._step(xb[:tail, ...], yb[:tail, ...])


class XpnnRunner(PooledRunner):
    """xpnn on its device: Adam lr 1e-3, cross-entropy; steps on pre-gathered device batches; an
    epoch is one shuffled pass through DataLoader (the batches gathered on the device)."""

    label = "xpnn"

    def __init__(self, name, batch_size, device, x, y, pool_idx, seed=0):
        import xpnn
        from xpnn import backend, nn, optim

        xpnn.manual_seed(seed)
        self.name, self.batch_size, self.device = name, batch_size, device
        self.model = build_xpnn(name, device)
        self.xp = self.model.xp
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = optim.Adam(self.model.parameters(), lr=LR)
        self.x, self.y = x, y
        take = self.xp.take
        self.pool = []
        for idx in pool_idx:
            i = backend.asarray(idx, self.xp, device=self.model.device)
            self.pool.append((take(x, i, axis=0), take(y, i, axis=0)))
        self._next = 0
        self._step = make_step(self.model, self.loss_fn, self.opt)
        self.clock = Clock("cupy" if backend.is_cupy(self.xp) else "host")
        self.last_loss = None

    def epoch(self, seed, images):
        from xpnn.data import DataLoader

        loader = DataLoader(self.x[:images, ...], self.y[:images, ...], batch_size=self.batch_size, shuffle=True, seed=seed, device=self.device)
        for xb, yb in loader:
            self.last_loss = self._step(xb, yb)

    def loss_value(self):
        from xpnn import backend

        return float(backend.to_numpy(self.last_loss))


class XpnnGraphRunner(XpnnRunner):
    """xpnn's step captured once (:class:`Capture`) and replayed: per step the batch is copied into
    the captured input buffers, then one graph launch. Its epoch gathers each full batch straight
    into those buffers (take(..., out=)) and replays; the last partial batch runs uncaptured.
    On setup the first replay is compared bit for bit with the same step run uncaptured."""

    label = "xpnn graph"

    def __init__(self, name, batch_size, device, x, y, pool_idx, seed=0):
        super().__init__(name, batch_size, device, x, y, pool_idx, seed)
        xs, ys = self.pool[0]
        self.x_static, self.y_static = self.xp.asarray(xs, copy=True), self.xp.asarray(ys, copy=True)
        self.capture = Capture(lambda: self._step(self.x_static, self.y_static), self.xp)
        self.capture.warm([lambda: self._step(self.x_static, self.y_static)] * 2)
        self.raw = raw_module(self.xp)
        if has_dropout(self.model):  # its masks differ from draw to draw: no bitwise reference
            self.capture.capture()
            self.identical = self.max_abs_diff = None
            return
        snap = snapshot(self.model, self.opt)
        ref_loss = self.capture.run(lambda: self._step(self.x_static, self.y_static))
        ref = host_params(self.model) + [self._host(ref_loss)]
        restore(self.model, self.opt, snap)
        self.capture.capture()
        self.capture.launch(on_capture_stream=True)
        self.capture.synchronize()
        got = host_params(self.model) + [self._host(self.capture.out)]
        self.identical, self.max_abs_diff = compare_params(got, ref)

    @staticmethod
    def _host(a):
        from xpnn import backend

        return np.array(backend.to_numpy(a), copy=True).reshape(1)

    def step_next(self):
        xb, yb = self.pool[self._next % len(self.pool)]
        self._next += 1
        self.x_static[...] = xb
        self.y_static[...] = yb
        self.capture.launch()

    def loss_value(self):
        return float(self._host(self.capture.out)[0])

    def epoch(self, seed, images):
        from xpnn import backend

        order = backend.asarray(np.random.default_rng(seed).permutation(images), self.xp, device=self.model.device)
        full = images // self.batch_size
        take = self.raw.take
        for b in range(full):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            take(self.x, idx, axis=0, out=self.x_static)
            take(self.y, idx, axis=0, out=self.y_static)
            self.capture.launch()
        if images % self.batch_size:
            idx = order[full * self.batch_size:]
            self._step(take(self.x, idx, axis=0), take(self.y, idx, axis=0))


class TorchRunner(PooledRunner):
    """PyTorch eager on its device: the twin model, Adam lr 1e-3 (PyTorch's default
    implementation), cross-entropy; zero_grad, forward, loss, backward, step. Its epoch takes
    the same batch order as xpnn's DataLoader with the same seed, gathered on the device."""

    label = "torch"

    def __init__(self, name, batch_size, device, x, y, pool_idx, seed=0):
        import torch

        torch.manual_seed(seed)
        self.torch, self.batch_size, self.device = torch, batch_size, device
        self.model = build_torch(name).to(device)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.x, self.y = x, y
        self.pool = [(x[torch.from_numpy(idx).to(device)], y[torch.from_numpy(idx).to(device)]) for idx in pool_idx]
        self._next = 0
        self.clock = Clock("torch" if str(device).startswith("cuda") else "host")
        self.last_loss = None

    def _step(self, xb, yb):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        self.opt.step()
        return loss

    def epoch(self, seed, images):
        order = self.torch.from_numpy(np.random.default_rng(seed).permutation(images)).to(self.device)
        for start in range(0, images, self.batch_size):
            idx = order[start:start + self.batch_size]
            self.last_loss = self._step(self.x[idx], self.y[idx])

    def loss_value(self):
        return float(self.last_loss.detach().cpu())


def bench_settings(args, gpu):
    if gpu:
        return dict(batch_sizes=args.batch_sizes, step_rounds=args.step_rounds, block_s=args.block_s, warmup=args.warmup,
                    epoch_repeats=args.epoch_repeats, epoch_images=TRAIN_IMAGES, pool=16)
    return dict(batch_sizes=[8], step_rounds=2, block_s=0.02, warmup=2, epoch_repeats=1, epoch_images=128, pool=4)


def load_bench_data(args, gpu):
    """Host (x, y) for the benchmark: MNIST's training split (NCHW float32), or in a dry run the
    first 1024 images (random data when MNIST is absent)."""
    from xpnn.data import load_dataset

    data_dir = Path(args.data_dir) if args.data_dir else None
    if has_mnist(data_dir):
        x, y = load_dataset("mnist", train=True, root=data_dir, download=False).arrays()
        source = f"MNIST from {data_dir}"
    elif gpu:
        raise SystemExit(f"bench: MNIST not found at {data_dir} (copy ../shared/data/mnist into .gpu_data/mnist, bench/GPU.md)")
    else:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(1024, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, size=1024)
        source = "random data (MNIST absent)"
    if not gpu:
        x, y = x[:1024], y[:1024]
    return x, y, source


def bench_config(name, batch_size, frameworks, data, settings, seed=0):
    """Step and epoch times of each framework on one model and batch size, alternating. A
    framework that fails (its setup, or a timed call) is dropped from the rest with its error."""
    rng = np.random.default_rng(seed)
    n = settings["epoch_images"]
    pool_idx = [rng.choice(len(data["xpnn"][0]), size=batch_size, replace=False) for _ in range(settings["pool"])]
    runners, errors = {}, {}

    def guarded(fw, call):
        if fw not in runners:
            return None
        try:
            return call()
        except Exception as exc:
            errors[fw] = f"{type(exc).__name__}: {exc}"
            say(f"  {fw} failed:")
            traceback.print_exc()
            del runners[fw]
            return None

    for fw, cls in frameworks.items():
        x, y, device = data[fw]
        try:
            runners[fw] = cls(name, batch_size, device, x, y, pool_idx, seed)
        except Exception as exc:
            errors[fw] = f"{type(exc).__name__}: {exc}"
            say(f"  {fw}: setup failed:")
            traceback.print_exc()
    for fw in list(runners):
        def warm(r=runners[fw]):
            for _ in range(settings["warmup"]):
                r.step_next()
            r.warm_epoch_shapes(n)
            return r.clock.measure(r.step_next, 3) / 3
        guess = guarded(fw, warm)
        if guess is not None:
            runners[fw].calls = int(min(400, max(3, round(settings["block_s"] / max(guess, 1e-6)))))
    steps = {fw: [] for fw in runners}
    host = {fw: [] for fw in runners}
    names = list(runners)
    for r_i in range(settings["step_rounds"]):
        shift = r_i % len(names)
        for fw in names[shift:] + names[:shift]:
            r = runners.get(fw)
            seconds = guarded(fw, lambda: r.clock.measure(r.step_next, r.calls))
            if seconds is not None:
                steps[fw].append(seconds / r.calls)
                host[fw].append(r.clock.host_s / r.calls)
    epochs = {fw: [] for fw in names}
    epoch_host = {fw: [] for fw in names}
    for e in range(settings["epoch_repeats"]):
        shift = e % len(names)
        for fw in names[shift:] + names[:shift]:
            r = runners.get(fw)
            seconds = guarded(fw, lambda: r.clock.measure(lambda: r.epoch(seed=e + 1, images=n), 1))
            if seconds is not None:
                epochs[fw].append(seconds)
                epoch_host[fw].append(r.clock.host_s)
    out = {}
    for fw, r in list(runners.items()):
        loss = guarded(fw, r.loss_value)
        if fw not in runners:
            continue
        epoch_s = statistics.median(epochs[fw]) if epochs[fw] else None
        out[fw] = {
            "step_s": statistics.median(steps[fw]), "step_s_all": steps[fw], "step_host_s": statistics.median(host[fw]),
            "calls_per_block": r.calls, "epoch_images": n, "epoch_full": n == TRAIN_IMAGES,
            "epoch_s": None if epoch_s is None else epoch_s * TRAIN_IMAGES / n, "epoch_runs_s": epochs[fw],
            "epoch_host_s": epoch_host[fw], "last_loss": loss, "finite": math.isfinite(loss),
        }
        if isinstance(r, XpnnGraphRunner):
            out[fw].update(identical_to_uncaptured=r.identical, max_abs_diff=r.max_abs_diff, capture=r.capture.kind)
    for fw, err in errors.items():
        out[fw] = {"error": err}
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None


def ratios(row):
    fw = row["frameworks"]
    t = fw.get("torch", {})
    return {f"{k}/torch": {key: _ratio(fw.get(k, {}).get(f"{key}_s"), t.get(f"{key}_s")) for key in ("step", "epoch")}
            for k in ("xpnn", "xpnn_graph") if k in fw}


def targets(rows):
    """Issue 13's targets: epoch ratio <= 1.0 at batch 256 for every model; <= 0.7 at batch 64 with
    the captured step."""
    out = []
    for row in rows:
        r = row.get("ratios", {})
        if row["batch_size"] == 256:
            m = r.get("xpnn/torch", {}).get("epoch")
            out.append({"target": f"{row['model']} b256: xpnn/torch per epoch <= 1.0", "measured": m, "met": None if m is None else m <= 1.0})
        if row["batch_size"] == 64 and "xpnn_graph/torch" in r:
            m = r["xpnn_graph/torch"].get("epoch")
            out.append({"target": f"{row['model']} b64: captured xpnn/torch per epoch <= 0.7", "measured": m, "met": None if m is None else m <= 0.7})
    return out


def markdown_table(bench):
    """The benchmark as a markdown table (times are medians; ~ marks an epoch scaled from a part)."""
    graph = any("xpnn_graph" in row["frameworks"] for row in bench["rows"])
    head = ["model", "batch", "xpnn step ms", "torch step ms", "step ratio", "xpnn epoch s", "torch epoch s", "epoch ratio"]
    if graph:
        head += ["graph step ms", "graph epoch s", "graph/torch epoch", "graph = eager"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in sorted(bench["rows"], key=lambda r: (MODELS.index(r["model"]), r["batch_size"])):
        fw, r = row["frameworks"], row.get("ratios", {})
        x, t, g = fw.get("xpnn", {}), fw.get("torch", {}), fw.get("xpnn_graph", {})

        def ep(f):
            return ("" if f.get("epoch_full", True) else "~") + fmt(f.get("epoch_s"), ".3f")

        cells = [LABELS[row["model"]], str(row["batch_size"]), fmt(x.get("step_s"), ".3f", 1e3), fmt(t.get("step_s"), ".3f", 1e3),
                 fmt(r.get("xpnn/torch", {}).get("step"), ".2f"), ep(x), ep(t), fmt(r.get("xpnn/torch", {}).get("epoch"), ".2f")]
        if graph:
            same = g.get("identical_to_uncaptured")
            cells += [fmt(g.get("step_s"), ".3f", 1e3), ep(g), fmt(r.get("xpnn_graph/torch", {}).get("epoch"), ".2f"),
                      "error" if "error" in g else ("n/a" if g else "-") if same is None else ("yes" if same else f"NO ({g.get('max_abs_diff', 0):.1e})")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_legend(bench):
    """What the table measured, in two sentences."""
    precision = ", ".join(f"{k} {v}" for k, v in (bench.get("torch_precision") or {}).items())
    where = (f"{bench['gpu']}: xpnn on CuPy {bench.get('cupy')} (CUPY_TF32={bench.get('cupy_tf32')}) against PyTorch {bench.get('torch', '-')} "
             f"eager on the same GPU, timed with device events" if bench.get("gpu") else
             f"DRY RUN on the CPU: xpnn on NumPy against PyTorch {bench.get('torch', '-')} CPU, tiny sizes, host clock; not a result")
    epoch = ("an epoch is one real shuffled pass over the 60,000 training images" if bench["settings"]["epoch_images"] == TRAIN_IMAGES
             else f"~: an epoch scaled from {bench['settings']['epoch_images']} images")
    return (f"{where}. Adam lr {LR:g}, float32 (PyTorch: {precision}), data already on the device; step: median of "
            f"{bench['settings']['step_rounds']} alternating blocks of steps on pre-gathered batches after a warm-up; {epoch}, "
            f"median of {bench['settings']['epoch_repeats']}; ratio = xpnn / PyTorch (below 1: xpnn faster)."
            + (" graph: xpnn's step captured in a CUDA graph and replayed (Adam's bias-correction scalars frozen at capture); "
               "graph = eager: its first replay equals the uncaptured step bit for bit (n/a: dropout, not compared)."
               if any("xpnn_graph" in row["frameworks"] for row in bench["rows"]) else ""))


def step_bench(args):
    from xpnn import backend

    cupy, why = probe_cupy()
    gpu = cupy is not None and not args.dry_run
    torch, why_t = probe_torch(want_cuda=gpu)
    settings = bench_settings(args, gpu)
    if not gpu:
        say(f"SKIPPED: the GPU benchmark ({'--dry-run' if args.dry_run else why}); the same code times NumPy against "
            f"PyTorch CPU on batch {settings['batch_sizes'][0]}, {settings['epoch_images']}-image epochs (scaled to 60,000, marked ~)")
        if torch is not None:
            torch.set_num_threads(1)
    if torch is None:
        say(f"SKIPPED: PyTorch in the benchmark ({why_t}); xpnn alone")
    device = "cuda" if gpu else "cpu"
    torch_device = "cuda" if gpu else "cpu"
    header = {"device": device, "settings": settings, "lr": LR, "optimizer": "Adam", "dtype": "float32"}
    if gpu:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        header["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        header["cupy"] = cupy.__version__
        header["cupy_tf32"] = os.environ.get("CUPY_TF32", "0")
    if torch is not None:
        header["torch"] = torch.__version__
        header["torch_precision"] = set_torch_precision(torch, args.torch_precision)
        if gpu:
            header["torch_gpu"] = torch.cuda.get_device_name(0)
    say("bench: " + json.dumps({k: v for k, v in header.items() if k != "settings"}))
    x, y, source = load_bench_data(args, gpu)
    header["data"] = source
    if not gpu:
        settings["epoch_images"] = min(settings["epoch_images"], len(x))
    xpnn_xp = backend.resolve(device)
    data = {"xpnn": (backend.asarray(x, xpnn_xp), backend.asarray(y, xpnn_xp), device)}
    data["xpnn_graph"] = data["xpnn"]
    frameworks = {"xpnn": XpnnRunner}
    if torch is not None:
        data["torch"] = (torch.from_numpy(x).to(torch_device), torch.from_numpy(y).to(torch_device), torch_device)
        frameworks["torch"] = TorchRunner
    if args.graph:
        frameworks["xpnn_graph"] = XpnnGraphRunner
        if not gpu:
            say("SKIPPED: CUDA-graph capture in the benchmark (no GPU); its runner times the stand-in that re-runs the step")
    twins = {}
    if torch is not None:
        for name in args.models:
            twins[name] = twin_check(name, device, torch_device)
            say(f"twin {name}: {twins[name]['params_xpnn']:,} parameters in xpnn, {twins[name]['params_torch']:,} in PyTorch; "
                f"logits with the same weights differ by {twins[name]['logits_rel_err']:.1e} (||d||/||torch||)")
    deadline = time.monotonic() + args.time_limit - 5
    order = sorted(settings["batch_sizes"], key=lambda b: (b != 256, b != 64, b))  # what the targets need first
    rows, left_out = [], []
    for batch_size in order:
        for name in args.models:
            if time.monotonic() > deadline - (30 if gpu else 0) and rows:
                left_out.append(f"{name} b{batch_size}")
                continue
            start = time.perf_counter()
            say(f"bench {name} batch {batch_size} ...")
            fws = bench_config(name, batch_size, frameworks, data, settings)
            row = {"model": name, "batch_size": batch_size, "frameworks": fws, "seconds": time.perf_counter() - start}
            row["ratios"] = ratios(row)
            rows.append(row)
            parts = [f"{fw} step {fmt(f.get('step_s'), '.3f', 1e3)} ms epoch {fmt(f.get('epoch_s'), '.3f')} s" for fw, f in fws.items()]
            say(f"  {'; '.join(parts)} ({row['seconds']:.1f} s)")
            gc.collect()
            if gpu:
                cupy.get_default_memory_pool().free_all_blocks()
                if torch is not None:
                    torch.cuda.empty_cache()
    bench = dict(header, rows=rows, twins=twins, left_out_for_time=left_out)
    bench["targets"] = targets(rows)
    table = markdown_table(bench)
    say(table)
    bad_twins = [n for n, t in twins.items() if t["logits_rel_err"] > TWIN_RTOL or t["params_xpnn"] != t["params_torch"]]
    def broken(fws):
        return [fw for fw, f in fws.items() if "error" in f or not f.get("finite", True)]

    errors = [f"{r['model']} b{r['batch_size']} {fw}" for r in rows for fw in broken(r["frameworks"]) if fw != "xpnn_graph"]
    graph_errors = [f"{r['model']} b{r['batch_size']}" for r in rows if "xpnn_graph" in broken(r["frameworks"])]
    not_same = [f"{r['model']} b{r['batch_size']}" for r in rows if r["frameworks"].get("xpnn_graph", {}).get("identical_to_uncaptured") is False]
    problems = [f"twins differ: {', '.join(bad_twins)}"] if bad_twins else []
    problems += [f"failed or non-finite: {', '.join(errors)}"] if errors else []
    problems += [f"captured step failed or non-finite (step 6 says more): {', '.join(graph_errors)}"] if graph_errors else []
    problems += [f"captured step's first replay differs from the uncaptured step: {', '.join(not_same)}"] if not_same else []
    problems += [f"left out for time: {', '.join(left_out)}"] if left_out else []
    summary = f"{len(rows)} configurations on {header.get('gpu', 'the CPU (dry-run)')}" + (f"; {'; '.join(problems)}" if problems else "")
    status = "FAIL" if bad_twins or errors else "PASS"
    return dict(status=status, summary=summary, bench=bench, table=table)


# ---- step 6: the captured step, bit for bit ------------------------------------------------------------


def graph_identity(name, device, batch_size, optimizer, replays, seed=0):
    """From one state: ``replays`` uncaptured steps on batches b0..bk, then (state restored) one
    capture replayed on the same batches copied into its input buffers; the parameters and losses
    are compared bit for bit. With Adam ``replays`` must be 1 (its bias corrections are frozen at
    capture); SGD's scalars do not change between steps, so it is replayed several times."""
    import xpnn
    from xpnn import backend, nn, optim

    xpnn.manual_seed(seed)
    model = build_xpnn(name, device)
    xp = model.xp
    opt = optim.Adam(model.parameters(), lr=LR) if optimizer == "adam" else optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    step = make_step(model, nn.CrossEntropyLoss(), opt)
    batches = [random_batch(model, batch_size, seed=s) for s in range(replays + 1)]
    x_static, y_static = xp.asarray(batches[0][0], copy=True), xp.asarray(batches[0][1], copy=True)
    cap = Capture(lambda: step(x_static, y_static), xp)
    cap.warm([lambda: step(x_static, y_static)] * 2)  # SGD's first step (momentum buffer) and Adam's state happen here
    snap = snapshot(model, opt)
    ref_losses = []
    for xb, yb in batches[1:]:
        ref_losses.append(np.array(backend.to_numpy(cap.run(lambda: step(xb, yb))), copy=True).reshape(1))
    ref = host_params(model)
    restore(model, opt, snap)
    cap.capture()
    got_losses = []
    for i, (xb, yb) in enumerate(batches[1:]):
        # A host-to-device upload between replays, as the benchmark's epochs make (the shuffle):
        # a replay that read a host staging buffer captured at capture time would now see other data.
        backend.asarray(np.random.default_rng(i).permutation(4096), xp)
        with cap._context(capturing=False):
            x_static[...] = xb
            y_static[...] = yb
        cap.launch(on_capture_stream=True)
        cap.synchronize()
        got_losses.append(np.array(backend.to_numpy(cap.out), copy=True).reshape(1))
    same_params, worst = compare_params(host_params(model), ref)
    same_losses, worst_loss = compare_params(got_losses, ref_losses)
    return {"model": name, "batch_size": batch_size, "optimizer": optimizer, "replays": replays, "capture": cap.kind,
            "identical": bool(same_params and same_losses), "max_abs_param_diff": worst, "max_abs_loss_diff": worst_loss}


def step_graph(args):
    cupy, why = probe_cupy()
    if args.dry_run or cupy is None:
        result = skipped(f"CUDA-graph capture ({'--dry-run' if args.dry_run else why}); the comparison runs through the NumPy stand-in")
        device, sizes = "cpu", [8]
    else:
        result, device, sizes = None, "cuda", args.batch_sizes
    models = [m for m in args.models if m != "torchnet"]
    say("note: the PyTorch example net is left out here: its dropout masks come from CuPy's generator, and whether a "
        "replay advances that generator as the uncaptured steps do is not what this step checks")
    checks = []
    for name in models:
        for batch_size in sizes:
            for optimizer, replays in (("adam", 1), ("sgd", 4)):
                try:
                    c = graph_identity(name, device, batch_size, optimizer, replays)
                except Exception as exc:
                    traceback.print_exc()
                    c = {"model": name, "batch_size": batch_size, "optimizer": optimizer, "identical": False, "error": f"{type(exc).__name__}: {exc}"}
                checks.append(c)
                say(f"{name} b{batch_size} {optimizer} x{replays}: " + ("identical" if c["identical"] else
                    f"DIFFERENT {c.get('error') or ''}(params {c.get('max_abs_param_diff', float('nan')):.1e}, loss {c.get('max_abs_loss_diff', float('nan')):.1e})"))
    bad = [f"{c['model']} b{c['batch_size']} {c['optimizer']}" for c in checks if not c["identical"]]
    summary = f"captured step identical to the uncaptured one in {len(checks) - len(bad)}/{len(checks)} checks" + (f"; DIFFERENT: {', '.join(bad)}" if bad else "")
    return fold_checks(result, checks, bad, f"but the stand-in differed on {', '.join(bad)}", summary)


STEP_FUNCS = {"info": step_info, "pytest": step_pytest, "sanitizer": step_sanitizer, "parity": step_parity,
              "hostsync": step_hostsync, "bench": step_bench, "graph": step_graph}


# ---- the orchestrator ------------------------------------------------------------------------------------


class Tee:
    """Write to the terminal and a log file."""

    def __init__(self, stream, path):
        self.stream, self.file = stream, open(path, "a", buffering=1)

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)

    def flush(self):
        self.stream.flush()
        self.file.flush()


def run_child(step, args, timeout):
    """``python -m bench.gpu _step STEP`` in its own process group, its output streamed through;
    killed (with its children) after ``timeout`` seconds. Returns the step's result dict."""
    result_path = Path(tempfile.mkstemp(prefix=f"xpnn-gpu-{step}-", suffix=".json")[1])
    cmd = [sys.executable, "-u", "-m", "bench.gpu", "_step", step, "--result", str(result_path), "--time-limit", str(int(timeout)),
           "--data-dir", str(args.data_dir or ""), "--models", ",".join(args.models), "--batch-sizes", ",".join(map(str, args.batch_sizes)),
           "--pytest-args", args.pytest_args, "--torch-precision", args.torch_precision,
           "--step-rounds", str(args.step_rounds), "--block-s", str(args.block_s), "--warmup", str(args.warmup),
           "--epoch-repeats", str(args.epoch_repeats)]
    cmd += ["--dry-run"] * args.dry_run + ["--graph"] * args.graph
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if args.dry_run:  # a shared 2-core machine: one thread each
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    timed_out = threading.Event()

    def kill(sig):
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    timers = [threading.Timer(timeout, kill, (signal.SIGTERM,)), threading.Timer(timeout + 10, kill, (signal.SIGKILL,))]
    for t in timers:
        t.daemon = True
        t.start()
    for line in proc.stdout:
        sys.stdout.write(line)
    proc.wait()
    for t in timers:
        t.cancel()
    seconds = time.perf_counter() - start
    try:
        result = json.loads(result_path.read_text()) if result_path.stat().st_size else None
    except (OSError, ValueError):
        result = None
    result_path.unlink(missing_ok=True)
    if timed_out.is_set():
        result = dict(result or {}, status="TIMEOUT", summary=f"TIMEOUT: stopped after {timeout:.0f} s (output above)")
    elif result is None:
        result = dict(status="FAIL", summary=f"FAIL: exit {proc.returncode} without a result (output above)")
    result["seconds"] = seconds
    result["exit_code"] = proc.returncode
    return result


def selected(args):
    steps = list(STEPS)
    if args.only:
        steps = ["info"] + [s for s in STEPS if s in args.only and s != "info"]
    return [s for s in steps if s not in args.skip]


def orchestrate(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "gpu.log"
    log.write_text("")
    sys.stdout = Tee(sys.stdout, log)
    start = time.monotonic()
    deadline = start + args.budget_s
    say(f"== python -m bench.gpu {' '.join(sys.argv[1:])}")
    say(f"   out {out}, data {args.data_dir}, budget {args.budget_s} s")
    steps = selected(args)
    results = {}
    for i, step in enumerate(steps):
        say(f"\n== {STEPS.index(step)}. {step}")
        if step == "graph" and not args.graph:
            say("SKIPPED: --graph not given")
            results[step] = {"status": "SKIPPED", "summary": "SKIPPED: --graph not given"}
            continue
        reserve = sum(LIMITS[s][1] for s in steps[i + 1:] if s != "graph" or args.graph)
        timeout = min(LIMITS[step][0], deadline - time.monotonic() - reserve)
        if timeout < LIMITS[step][1] / 2:
            say(f"SKIPPED: out of time ({deadline - time.monotonic():.0f} s left of the {args.budget_s} s budget)")
            results[step] = {"status": "SKIPPED", "summary": "SKIPPED: out of time"}
            continue
        results[step] = run_child(step, args, timeout)
        say(f"-- {step}: {results[step]['summary']} [{results[step]['seconds']:.0f} s]")
        if step == "info" and not args.dry_run and not results[step].get("info", {}).get("gpu") and not args.no_auto_dry_run:
            say(f"no GPU visible ({results[step].get('info', {}).get('cupy')}): continuing as --dry-run (--no-auto-dry-run to run the CPU suite in full)")
            args.dry_run = True
    report = {"command": "python -m bench.gpu " + " ".join(sys.argv[1:]), "dry_run": args.dry_run, "wall_s": time.monotonic() - start,
              "info": results.get("info", {}).get("info"), "steps": results}
    bench = results.get("bench", {}).get("bench")
    if bench:
        bench["table"] = results["bench"].get("table")
    (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str))
    info = report["info"] or {}
    say("\n== summary" + (" (DRY RUN: nothing here ran on a GPU)" if args.dry_run else ""))
    say(f"GPU: {info.get('gpu_name', 'none')}; cupy {info.get('cupy')}; torch {info.get('torch')}; wall {report['wall_s']:.0f} s")
    for step in steps:
        r = results.get(step, {})
        say(f"{STEPS.index(step)} {step:<10}{r.get('status', '?'):<8}{r.get('summary', '')}")
    md = []
    if bench:
        md += [bench_legend(bench), "", results["bench"]["table"], ""]
        for t in bench.get("targets", []):
            md.append(f"- {t['target']}: {fmt(t['measured'], '.2f')} ({ {True: 'met', False: 'NOT met', None: 'not measured'}[t['met']] })")
    if md:
        (out / "gpu.md").write_text("\n".join(md) + "\n")
        say("\n" + "\n".join(md))
    say(f"\nwrote {out / 'gpu.json'}, {out / 'gpu.log'}" + (f", {out / 'gpu.md'}" if md else ""))
    failed = [s for s in steps if results.get(s, {}).get("status") in ("FAIL", "TIMEOUT")]
    return 1 if failed else 0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where gpu.json, gpu.md and gpu.log go (default bench/results)")
    p.add_argument("--data-dir", default=None, help="MNIST files (default .gpu_data/mnist, else ../shared/data/mnist)")
    p.add_argument("--dry-run", action="store_true", help="exercise the logic on the CPU, skipping every GPU part (automatic without a GPU)")
    p.add_argument("--no-auto-dry-run", action="store_true", help="without a GPU, run the full CPU steps anyway (the whole test suite)")
    p.add_argument("--graph", action="store_true", help="also the CUDA-graph captured step (timed in the bench, checked in step 6)")
    p.add_argument("--only", default="", help=f"comma-separated steps to run, from {','.join(STEPS[1:])}")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out")
    p.add_argument("--models", default=",".join(MODELS), help=f"from {','.join(MODELS)} (default all)")
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="benchmark batch sizes (default 64,256,1024)")
    p.add_argument("--budget-s", type=float, default=450, help="seconds for the whole run; steps are cut to fit (default 450)")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments, one string")
    p.add_argument("--torch-precision", choices=("ieee", "default"), default="ieee",
                   help="PyTorch float32 matmul/conv precision: ieee (no TF32, like CuPy by default) or PyTorch's defaults")
    p.add_argument("--step-rounds", type=int, default=7, help="alternating rounds of step timing (default 7)")
    p.add_argument("--block-s", type=float, default=0.08, help="seconds of steps per timed block (default 0.08)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps per framework and configuration (default 5)")
    p.add_argument("--epoch-repeats", type=int, default=2, help="full epochs per framework, alternating (default 2)")
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--time-limit", type=float, default=600, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; expected some of {','.join(MODELS)}")
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    for s in args.only + args.skip:
        if s not in STEPS:
            p.error(f"unknown step {s!r}; expected some of {','.join(STEPS)}")
    if args.data_dir in (None, ""):
        args.data_dir = str(default_data_dir())
    return args


def steps_main(argv):
    p = argparse.ArgumentParser(prog="python -m bench.gpu steps", description=run_steps.__doc__)
    p.add_argument("--model", default="mlp,cnn,lenet", help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--steps", type=int, default=3, help="steps per optimizer (Adam, then SGD)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=37)
    p.add_argument("--no-pool", action="store_true", help="CuPy: no memory pool, so compute-sanitizer sees each array's bounds")
    a = p.parse_args(argv)
    models = [m.strip() for m in a.model.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}")
    run_steps(models, a.steps, a.device, a.batch_size, a.no_pool)
    return 0


def child_main(step, argv):
    args = parse_args(argv)
    try:
        result = STEP_FUNCS[step](args)
    except BaseException as exc:  # printed in full; the orchestrator goes on with the next step
        traceback.print_exc()
        result = {"status": "FAIL", "summary": f"FAIL: {type(exc).__name__}: {exc}"[:500]}
    if args.result:
        Path(args.result).write_text(json.dumps(result, default=str))
    return 0 if result.get("status") in ("PASS", "SKIPPED") else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["steps"]:
        return steps_main(argv[1:])
    if argv[:1] == ["_step"]:
        return child_main(argv[1], argv[2:])
    return orchestrate(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
