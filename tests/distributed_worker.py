"""One rank of the data-parallel tests (tests/test_distributed.py): run under ``mpiexec -n N``
or as one plain process (the reference). ``python tests/distributed_worker.py MODE OUT [EPOCHS]``.

Modes: ``train`` (an MLP in float64 or a small CNN, Adam, batches of 16 over 50 samples so the last
global batch of 2 leaves a rank an empty shard at N = 3; writes each rank's weights), ``bad_data``
(rank 1's labels are out of range), ``seed`` (each rank seeds differently), ``resume`` (continue
OUT/ckpt.npz to EPOCHS), ``kill`` (rank 1 is SIGKILLed as its second epoch begins). Every rank writes OUT/rank{r}.npz (weights) and OUT/rank{r}.json."""

import json
import os
import sys

import numpy as np

import xpnn
from xpnn import nn, optim
from xpnn.data import DataLoader
from xpnn.train import ModelCheckpoint, Trainer


def main(mode, out, epochs=2, model_kind="mlp"):
    from xpnn.distributed import get_communicator

    comm = get_communicator("auto")
    rank = comm.rank
    seed = 7 + (rank if mode == "seed" else 0)
    data = np.random.default_rng(123)
    if model_kind == "cnn":
        x = data.standard_normal((50, 1, 8, 8))
        y = data.integers(0, 3, 50)
        xpnn.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3)).to(dtype="float64")
    else:
        x = data.standard_normal((50, 6))
        y = data.integers(0, 3, 50)
        xpnn.manual_seed(seed)
        model = xpnn.models.MLP([6, 12, 3]).to(dtype="float64")
    if mode == "bad_data" and rank == 1:
        y = y + 100
    loader = DataLoader(x, y, batch_size=16, shuffle=True, seed=seed)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    trainer = Trainer(model, optimizer, log_every=2, distributed=comm if comm.size > 1 else None)
    saver = ModelCheckpoint(os.path.join(out, "ckpt.npz"))
    callbacks = [saver]
    if mode == "kill" and rank == 1:  # rank 1 dies without a word in its second epoch
        class Die(xpnn.train.Callback):
            def on_epoch_begin(self, epoch):
                if epoch == 1:
                    os.kill(os.getpid(), 9)

        callbacks.append(Die())
    start = 0
    if mode == "resume":
        start = trainer.restore(os.path.join(out, "ckpt.npz"), loader)
    history = trainer.fit(loader, int(epochs), valid=(x, y), callbacks=callbacks, start_epoch=start, progress=False)
    np.savez(os.path.join(out, f"rank{rank}.npz"), **{name: np.asarray(p.data) for name, p in model.named_parameters()})
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"size": comm.size, "last_saved": saver.last_saved, "history": {k: list(v) for k, v in history.items()}}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
