"""python -m bench.profile: where one xpnn training step spends its time, layer by layer.

Times every layer's forward and backward, the loss, zero_grad and the optimizer's step over many
steps on real MNIST batches (as bench's runner makes them), and prints milliseconds per step next
to each Linear/Conv2d's GEMM work, the rate it reached and this machine's GEMM floor for it. ResNet-20
(random CIFAR-10-shaped batches, as ``python -m bench`` times it) nests its layers in blocks: its
layers are summed by type (all Conv2d forwards in one row, ...), and the containers' additions are
what the whole step has beyond the rows. With ``--cprofile`` it also prints cProfile's functions by
own time. Examples: ``python -m bench.profile --model lenet --batch-size 128``,
``python -m bench.profile --model resnet20 --steps 10``, ``python -m bench.profile --model cnn3264``.
"""

import argparse
import cProfile
import pstats
import time
from collections import defaultdict
from pathlib import Path

from . import gemm, mnist, runners, timing

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet", choices=("mlp", "cnn", "lenet", "resnet20", *runners.WIDER))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="timed steps after 20 warm-up steps (default 200)")
    p.add_argument("--cprofile", type=int, default=0, metavar="N", help="also print cProfile's top N functions")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    return p.parse_args(argv)


class PhaseClock:
    """Seconds spent in named phases, summed over the run; a phase entered again from inside
    itself (Linear.backward calls its own backward_params) is counted once."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.active = set()

    def wrap(self, name, fn):
        def timed(*args):
            if name in self.active:
                return fn(*args)
            self.active.add(name)
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.active.discard(name)
        return timed


def layer_labels(model):
    """(label, layer) of each layer timed: "<index> <type>" for a flat Sequential's layers, the
    type alone for the leaves of a nested model (a ResNet), whose layers of one type share a row."""
    layers = list(model)
    if all(not layer._modules for layer in layers):
        return [(f"{index} {type(layer).__name__}", layer) for index, layer in enumerate(layers)]
    return [(type(layer).__name__, layer) for layer in model.modules() if not layer._modules]


def instrument(runner, clock):
    """Wrap each layer's forward/backward/backward_params, the loss and the optimizer of an
    XpnnRunner (instance attributes shadow the class methods, so the model code runs unchanged)."""
    for label, layer in layer_labels(runner.model):
        layer.forward = clock.wrap(f"{label} forward", layer.forward)
        layer.backward = clock.wrap(f"{label} backward", layer.backward)
        layer.backward_params = clock.wrap(f"{label} backward", layer.backward_params)
    runner.loss_fn.forward = clock.wrap("loss forward", runner.loss_fn.forward)
    runner.loss_fn.backward = clock.wrap("loss backward", runner.loss_fn.backward)
    runner.opt.zero_grad = clock.wrap("zero_grad", runner.opt.zero_grad)
    runner.opt.step = clock.wrap(f"{type(runner.opt).__name__} step", runner.opt.step)


def layer_work(model, batch_size, image):
    """Label (as :func:`layer_labels`) -> {"forward"/"backward": (GEMM flops, best seconds of those
    GEMMs alone at their shapes)} of the Linear/Conv2d layers, summed over the layers of one label;
    the first layer has no input gradient (its input is the data)."""
    weighted = [label for label, layer in layer_labels(model) if getattr(layer, "weight", None) is not None
                and layer.weight.data.ndim in (2, 4)]
    work = defaultdict(lambda: {"forward": (0, 0.0), "backward": (0, 0.0)})
    for position, (label, (rows, k, n)) in enumerate(zip(weighted, gemm.layer_gemms(model, image))):
        m = batch_size * rows
        backward = [("dW", k, m, n)] + ([("dX", m, n, k)] if position else [])
        for phase, products in (("forward", [("forward", m, k, n)]), ("backward", backward)):
            flops, alone = work[label][phase]
            work[label][phase] = (flops + gemm.flops(products), alone + sum(gemm.seconds(*p) for p in products))
    return dict(work)


def main(argv=None):
    args = parse_args(argv)
    x, y = runners.training_images(args.model, args.batch_size, args.data_dir)
    batches = mnist.batches(x, y, args.batch_size, 32)
    runner = runners.make("xpnn", args.model, args.batch_size)
    step = timing.cycling(runner.step, batches)
    timing.per_call(step, 20)
    whole = sorted(timing.per_call(step, args.steps))
    rate = gemm.peak_rate()

    clock = PhaseClock()
    instrument(runner, clock)
    start = time.perf_counter()
    timing.per_call(step, args.steps)
    instrumented = time.perf_counter() - start
    work = layer_work(runner.model, args.batch_size, x[:1])

    print(f"{args.model}, batch {args.batch_size}: median step {timing.median(whole) * 1e3:.2f} ms "
          f"({args.steps} steps, uninstrumented); square GEMM rate {rate / 1e9:.0f} GFLOP/s")
    print(f"{'phase':24} {'ms/step':>8} {'share':>6} {'GFLOP':>7} {'GFLOP/s':>8} {'GEMMs alone ms':>15}")
    total = sum(clock.seconds.values())
    for name, seconds in clock.seconds.items():
        ms = seconds / args.steps * 1e3
        line = f"{name:24} {ms:8.3f} {seconds / total:6.1%}"
        label, _, phase = name.rpartition(" ")
        layer = work.get(label)
        if layer is not None:
            flops, alone = layer[phase]
            line += f" {flops / 1e9:7.3f} {flops / (ms / 1e3) / 1e9:8.0f} {alone * 1e3:15.3f}"
        print(line)
    alone = sum(s for layer in work.values() for _, s in layer.values())
    print(f"{'sum of phases':24} {total / args.steps * 1e3:8.3f}; whole instrumented step "
          f"{instrumented / args.steps * 1e3:.3f} ms; the step's GEMMs alone {alone * 1e3:.3f} ms")

    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.runcall(timing.per_call, step, args.steps)
        stats = pstats.Stats(profiler).sort_stats("tottime")
        stats.print_stats(args.cprofile)


if __name__ == "__main__":
    main()
