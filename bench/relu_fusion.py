"""What does ``nn.Sequential``'s fusion of a ReLU into the layer before it gain? The training step
of each benchmark model with the fusion on and off (``nn.Sequential.fuse_relu``), alternating
blocks in one process (median step, half a second's pause after each block), on the threads
``Trainer`` gives each model. Run from the repository
root: ``python bench/relu_fusion.py [model:batch ...]`` (default: the convolutional benchmark
models at their benchmark batch sizes)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import mnist, runners  # noqa: E402
from bench.timing import alternate, block_size, cycling, median  # noqa: E402
from xpnn import nn  # noqa: E402

MODELS = ("cnn:64", "lenet:128", "cnn3264:128", "torchmnist:64", "resnet20:128")
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def with_fusion(step, fuse):
    def run():
        nn.Sequential.fuse_relu = fuse
        step()
    return run


def main(argv):
    for spec in argv or MODELS:
        model, batch_size = spec.split(":")
        batch_size = int(batch_size)
        x, y = runners.training_images(model, batch_size, DATA_DIR)
        batches = mnist.batches(x, y, batch_size, 4)
        tasks = {}
        for name, fuse in (("apart", False), ("fused", True)):
            runner = runners.XpnnRunner(model, batch_size)
            step = with_fusion(cycling(runner.step, [runner.convert(*b) for b in batches]), fuse)
            tasks[name] = (step, block_size(step, 3, 0.3), 9)
        ms = {k: median(t) * 1e3 for k, t in alternate(tasks, 9, pause=0.5).items()}
        print(f"{model} batch {batch_size}: step with the ReLUs apart {ms['apart']:.2f} ms, fused {ms['fused']:.2f} "
              f"({ms['apart'] / ms['fused']:.3f}x)", flush=True)
    nn.Sequential.fuse_relu = True


if __name__ == "__main__":
    main(sys.argv[1:])
