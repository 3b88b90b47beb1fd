"""One runner per framework, each with the same three calls: ``convert`` (host NumPy arrays to the
framework's own), ``step`` (one training step on a batch) and ``epoch`` (one real pass over the
training set, the way a user of that framework writes it). Adam lr 1e-3, cross-entropy throughout;
ResNet-20 (CIFAR-10 shapes, steps only) trains with SGD, lr 0.1, momentum 0.9, as in He et al."""

import os

import numpy as np

LR = 1e-3
SGD_MODELS = {"resnet20": dict(lr=0.1, momentum=0.9)}  # models trained with SGD, and its settings
RANDOM_DATA = {"resnet20": ((3, 32, 32), 10, 50_000)}  # models timed on random data: image shape, classes, epoch images


def random_data(model, batch_size, seed=0):
    """Host images of the model's dataset shape (CIFAR-10's for ResNet-20), standard normal like
    normalised pixels, and random labels: 4 batches, from which ``mnist.batches`` draws distinct
    ones without an epoch's worth of images in memory."""
    shape, classes, _ = RANDOM_DATA[model]
    rng = np.random.default_rng(seed)
    count = 4 * batch_size
    return rng.standard_normal((count, *shape), dtype=np.float32), rng.integers(0, classes, count)
def training_images(model, batch_size, data_dir):
    """The images a model is timed on: :func:`random_data` for the models in ``RANDOM_DATA``,
    else MNIST's training set from ``data_dir``."""
    if model in RANDOM_DATA:
        return random_data(model, batch_size)
    from . import mnist  # here, as the runners' other imports: tests load this file on its own

    return mnist.load(data_dir, model)


THREADS = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())  # NumPy's OpenBLAS follows OMP_NUM_THREADS too


# Issue 20's wider networks, built from xpnn.nn layers here (not xpnn.models entries); their epochs
# are timed on the first SHORT_EPOCH_BATCHES batches of MNIST (peak RSS included) and extrapolated.
WIDER = ("cnn3264", "torchmnist")
SHORT_EPOCH_BATCHES = 50


def build_wider(name):
    """"cnn3264": the LeNet-style CNN with 32 and 64 channels (conv 3x3 pad 1, ReLU, max pool 2,
    twice; 3136-128-10). "torchmnist": the network of PyTorch's MNIST example (conv 3x3 32, conv 3x3
    64 unpadded, max pool 2, dropout 0.25, 9216-128, dropout 0.5, 10), dropouts kept as the
    example has them (train mode: both frameworks draw masks every step)."""
    from xpnn import nn

    if name == "cnn3264":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )
    if name == "torchmnist":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
        )
    raise ValueError(f"unknown model {name!r}")


def build_xpnn(name):
    """The xpnn model "mlp", "cnn", "lenet" or "resnet20" from xpnn.models, or one of :data:`WIDER`."""
    from xpnn import models

    if name in WIDER:
        return build_wider(name)
    if name == "mlp":
        return models.MLP([784, 256, 10])
    if name == "resnet20":
        return models.resnet20()
    return {"cnn": models.SimpleCNN, "lenet": models.LeNet}[name]()


class XpnnRunner:
    """xpnn on NumPy: manual steps as Trainer makes them (no input gradient, as torch skips it for
    data that does not require grad); the epoch goes through DataLoader(shuffle=True) and Trainer.fit."""

    def __init__(self, model, batch_size, seed=0, threads=None):
        import xpnn
        from xpnn import nn, optim

        xpnn.manual_seed(seed)
        self.batch_size = batch_size
        self.model = build_xpnn(model)
        self.threads = xpnn.train.default_threads(self.model) if threads is None else threads  # what Trainer would use
        self.loss_fn = nn.CrossEntropyLoss()
        sgd = SGD_MODELS.get(model)
        self.opt = optim.SGD(self.model.parameters(), **sgd) if sgd else optim.Adam(self.model.parameters(), lr=LR)

    def convert(self, x, y):
        return x, y

    def step(self, xb, yb):
        import xpnn

        xpnn.set_num_threads(self.threads)  # as Trainer.fit; free when already set
        loss = self.loss_fn(self.model(xb), yb)
        self.opt.zero_grad()
        self.model.backward_params(self.loss_fn.backward())
        self.opt.step()
        return loss

    def epoch(self, x, y, seed):
        from xpnn.data import DataLoader
        from xpnn.train import Trainer

        loader = DataLoader(x, y, batch_size=self.batch_size, shuffle=True, seed=seed)
        Trainer(self.model, self.opt, self.loss_fn, verbose=False).fit(loader, epochs=1, progress=False)


class TorchRunner:
    """PyTorch CPU eager: zero_grad, forward, loss, backward, step, on tensors made once from NumPy."""

    def __init__(self, model, batch_size, seed=0):
        import torch

        from .torch_models import build

        torch.manual_seed(seed)
        torch.set_num_threads(THREADS)
        self.torch = torch
        self.batch_size = batch_size
        self.model = build(model)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        sgd = SGD_MODELS.get(model)
        self.opt = torch.optim.SGD(self.model.parameters(), **sgd) if sgd else torch.optim.Adam(self.model.parameters(), lr=LR)

    def convert(self, x, y):
        return self.torch.from_numpy(x), self.torch.from_numpy(y)

    def step(self, xb, yb):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        self.opt.step()
        return loss

    def epoch(self, x, y, seed):
        """The same batch order as xpnn's DataLoader with the same seed."""
        order = self.torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
        for start in range(0, len(x), self.batch_size):
            idx = order[start:start + self.batch_size]
            self.step(x[idx], y[idx])


class SeedMLPRunner:
    """The seed notebooks' float64 NumPy MLP (bench/seed_mlp.py), data converted to float64 up front."""

    def __init__(self, model, batch_size, seed=0):
        from .seed_mlp import SeedMLP

        self.batch_size = batch_size
        self.net = SeedMLP([784, 256, 10], lr=LR, seed=seed)

    def convert(self, x, y):
        return x.astype(np.float64), y

    def step(self, xb, yb):
        return self.net.train_step(xb, yb)

    def epoch(self, x, y, seed):
        order = np.random.default_rng(seed).permutation(len(x))
        for start in range(0, len(x), self.batch_size):
            idx = order[start:start + self.batch_size]
            self.step(x[idx], y[idx])


class SeedConvRunner:
    """The seed notebook's CNN from bench/seed_conv.py: loops over output pixels, float64, SGD as in
    the notebook, starting from the xpnn model's weights. Too slow for an epoch: it has none."""

    def __init__(self, model, batch_size, seed=0):
        from .seed_conv import NaiveSeedCNN

        self.net = NaiveSeedCNN(XpnnRunner(model, batch_size, seed=seed).model.state_dict())

    def convert(self, x, y):
        return x.astype(np.float64), y

    def step(self, xb, yb):
        return self.net.step(xb, yb)


FRAMEWORKS = ("xpnn", "torch", "seed")
SEED_RUNNERS = {"mlp": SeedMLPRunner, "cnn": SeedConvRunner}


def make(framework, model, batch_size, seed=0):
    """The runner of ``framework`` ("xpnn", "torch" or "seed") for ``model`` at ``batch_size``."""
    cls = SEED_RUNNERS[model] if framework == "seed" else {"xpnn": XpnnRunner, "torch": TorchRunner}[framework]
    return cls(model, batch_size, seed=seed)
