"""``python -m bench.torch_weights``: a LeNet trained in PyTorch on real MNIST (2 epochs, Adam),
saved by PyTorch as safetensors, loaded into xpnn with ``xpnn.load_torch_state_dict``; prints both
test accuracies, the share of equal predictions and the largest logit difference (issue 19)."""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import xpnn
from xpnn.data import load_dataset

from .torch_models import build


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    root = args.data_dir
    x, y = load_dataset("mnist", root=root).arrays()
    xt, yt = load_dataset("mnist", train=False, root=root).arrays()
    net = build("lenet")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    start = time.time()
    for epoch in range(args.epochs):
        order = torch.randperm(len(xs))
        for i in range(0, len(xs), 64):
            idx = order[i:i + 64]
            loss = torch.nn.functional.cross_entropy(net(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(xt)).numpy()
    path = str(Path(tempfile.mkdtemp()) / "lenet.safetensors")
    save_file(net.state_dict(), path)
    model = xpnn.models.build_model("lenet", (1, 28, 28), 10)
    xpnn.load_torch_state_dict(model, path)
    xpnn_logits = xpnn.backend.to_numpy(xpnn.Trainer(model, None, verbose=False).predict(xt, logits=True))
    acc_t = (torch_logits.argmax(1) == yt).mean()
    acc_x = (xpnn_logits.argmax(1) == yt).mean()
    print(f"trained in PyTorch {time.time() - start:.0f} s; test accuracy PyTorch {acc_t:.2%}, xpnn {acc_x:.2%}; "
          f"predictions equal {np.mean(torch_logits.argmax(1) == xpnn_logits.argmax(1)):.2%}; max |logit difference| {np.abs(torch_logits - xpnn_logits).max():.2e}")


if __name__ == "__main__":
    main()
