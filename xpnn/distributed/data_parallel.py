"""What a Trainer does differently on N ranks: check at start that the ranks agree, broadcast
rank 0's weights, buffers and optimizer state, give each rank its shard of every global batch,
average the gradients over one flat buffer, reduce the metrics, and end the whole job when one
rank fails.

Gradients. Each rank's loss is the mean over its shard of n_r samples, so its gradient g_r is the
gradient of that shard's mean. The one-process gradient of the global batch's mean loss is
sum_r(n_r * g_r) / n with n = sum_r n_r: every rank scales by n_r, one allreduce sums, and the sum
is divided by n (known on every rank: the global batch's size). This is exact for unequal shards
(the last batch) and for an empty shard (n_r = 0, no forward). A loss with reduction "sum" needs
no scaling: its global gradient is the plain sum. The step's loss and correct count ride in the
same buffer (two more elements), so the reported numbers are global with no second message and no
host sync.

Failures. A rank that raises prints ``xpnn: error: rank K: ...`` and calls MPI_Abort, which ends
every rank of the job (the others may be blocked in a collective and could not otherwise learn
of it); this is ChainerMN's global_except_hook. A killed rank is noticed by the launcher, which
ends the job. Checkpoints are written atomically by rank 0, so the last one stays loadable.
"""

import hashlib
import sys
import time

import numpy as np

from .. import backend
from ..errors import DistributedError


ABORT_GRACE = 5.0  # seconds a rank waits for rank 0 to report an error all ranks found
# Seconds a rank waits between printing its error and aborting the job: MPI_Abort can end the
# launcher's output forwarding before the line written just before it reaches the terminal (one
# run in eight lost it under MPICH's mpiexec).
OUTPUT_DRAIN = 0.5


class CollectiveError(DistributedError):
    """An error every rank finds at the same point (the start-up check), so rank 0 alone reports it."""


def shard_bounds(n, rank, size):
    """Rank ``rank``'s contiguous part [start, stop) of a batch of ``n``: sizes differ by at most one."""
    return n * rank // size, n * (rank + 1) // size


class DataParallel:
    """The Trainer's helper for one fit on communicator ``comm`` (see the module docstring).
    ``comm_seconds``: wall time spent in the step's allreduce, for the scaling benchmark."""

    def __init__(self, comm, model, optimizer):
        self.comm, self.model, self.optimizer = comm, model, optimizer
        self.params = list(model.parameters())
        self.comm_seconds = 0.0
        self.steps = 0

    @property
    def rank(self):
        return self.comm.rank

    @property
    def size(self):
        return self.comm.size

    # ---- start --------------------------------------------------------------------------------

    def check_consistent(self, signature):
        """Raise one DistributedError, on every rank, if any rank's ``signature`` (a dict of
        small values: model, shapes, batch size, seeds) differs from rank 0's; it names the first
        differing entry, rank 0's value and the other rank's."""
        everyone = self.comm.allgather(signature)
        reference = everyone[0]
        for rank, theirs in enumerate(everyone[1:], start=1):
            for key in reference:
                if theirs.get(key) != reference[key]:
                    raise CollectiveError(
                        f"ranks disagree on {key}: rank 0 has {_short(reference[key])}, rank {rank} has {_short(theirs.get(key))}; "
                        "every rank must run the same command (same seed, model, batch size and data)"
                    )

    def broadcast_state(self):
        """Rank 0's parameters, buffers and optimizer state arrays on every rank (the ranks'
        structures were checked equal first)."""
        comm = self.comm
        for p in self.params:
            comm.broadcast(p.data)
        self.broadcast_buffers()
        for p in self.params:
            state = self.optimizer.state.get(p, {})
            for key in sorted(state):
                value = state[key]
                if hasattr(value, "shape"):
                    comm.broadcast(value)

    def broadcast_buffers(self):
        """Rank 0's buffers (BatchNorm running statistics) on every rank, so that evaluation and
        the checkpoint see one model. Batch statistics in training stay per rank, as in DDP."""
        for _, buf in self.model.named_buffers():
            if hasattr(buf, "shape") and buf.size:
                self.comm.broadcast(buf)

    # ---- steps --------------------------------------------------------------------------------

    def shard(self, loader):
        """Yield ``(xb, yb, n)``: this rank's part of each global batch and the global batch size.
        A :class:`~xpnn.data.DataLoader` gathers only this rank's rows; any other loader's
        batches are sliced."""
        if hasattr(loader, "shard_batches"):
            yield from loader.shard_batches(self.rank, self.size)
            return
        for xb, yb in loader:
            n = xb.shape[0]
            a, b = shard_bounds(n, self.rank, self.size)
            yield xb[a:b, ...], yb[a:b, ...], n

    def reduce_step(self, n_local, n_global, loss, correct, weighted):
        """Average the gradients (see the module docstring) in place; returns the global
        ``(loss, correct)`` as 0-d device arrays (``correct`` None when not counted)."""
        params = self.params
        xp = backend.namespace_of(params[0].data)
        dtype = xp.float64 if params[0].data.dtype == xp.float64 else xp.float32
        scale = n_local / n_global if weighted else 1.0
        device = backend.resolve_device(params[0].data)
        tail = [xp.reshape(xp.astype(loss, dtype) * (n_local if weighted else 1.0), (1,)) if loss is not None else xp.zeros((1,), dtype=dtype, device=device)]
        tail.append(xp.reshape(xp.astype(correct, dtype), (1,)) if correct is not None else xp.zeros((1,), dtype=dtype, device=device))
        parts = [xp.reshape(xp.astype(p.grad, dtype) * scale, (-1,)) for p in params] if n_local else [xp.zeros((p.size,), dtype=dtype, device=device) for p in params]
        buffer = xp.concat(parts + tail)
        start = time.perf_counter()
        self.comm.allreduce_sum(buffer)
        self.comm_seconds += time.perf_counter() - start
        self.steps += 1
        offset = 0
        for p in params:
            size = p.size
            p.grad = xp.astype(xp.reshape(buffer[offset:offset + size], p.data.shape), p.data.dtype)
            offset += size
        total_loss = buffer[offset] / n_global if weighted else buffer[offset]
        return total_loss, buffer[offset + 1]

    def reduce_totals(self, *values):
        """Host numbers summed over ranks (evaluation's loss sum, correct count and samples)."""
        buffer = np.asarray(values, dtype=np.float64)
        self.comm.allreduce_sum(buffer)
        return buffer.tolist()

    # ---- failure ------------------------------------------------------------------------------

    def fail(self, exc):
        """End the job after this rank's error (see :func:`fail`)."""
        fail(self.comm, exc)


def fail(comm, exc):
    """Print this rank's error as one line naming the rank, ``xpnn: error: rank K of N: ...``, and
    end the whole job (exit status 2). An error every rank raises at once (a CollectiveError: the
    ranks disagree) is printed by rank 0 alone; the others wait for its abort (and abort
    themselves after ABORT_GRACE seconds)."""
    if isinstance(exc, CollectiveError) and comm.rank != 0:
        time.sleep(ABORT_GRACE)
        comm.abort(2)
    message = " ".join(str(exc).split())
    if isinstance(exc, KeyboardInterrupt):
        message = "interrupted" + (f"; {message}" if message else "")
    elif not type(exc).__module__.startswith("xpnn"):
        message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    print(f"xpnn: error: rank {comm.rank} of {comm.size}: {message}", file=sys.stderr, flush=True)
    time.sleep(OUTPUT_DRAIN)
    comm.abort(2)


def signature(model, optimizer, loader, extra=None):
    """What must be equal on every rank for one data-parallel run: the model's parameter names,
    shapes and dtypes, the optimizer's class, hyper-parameters and state shapes, the loader's
    batch size, length, size and shuffle state (the seed), and the global random state."""
    from .. import random as xpnn_random

    params = [(name, tuple(p.data.shape), str(p.data.dtype)) for name, p in model.named_parameters()]
    index = {id(p): i for i, p in enumerate(model.parameters())}
    state = sorted((index.get(id(p), -1), key, tuple(v.shape)) for p, entries in optimizer.state.items() for key, v in entries.items() if hasattr(v, "shape"))
    groups = [{k: v for k, v in g.items() if k != "params" and isinstance(v, (int, float, str, bool, tuple, list, type(None)))} for g in optimizer.param_groups]
    found = {
        "the model (parameter names, shapes, dtypes)": _digest(params),
        "the number of parameters": sum(p.size for p in model.parameters()),
        "the optimizer": type(optimizer).__name__,
        "the optimizer's hyper-parameters": _digest(groups),
        "the optimizer's state": _digest(state),
        "the training loader's batch size": getattr(loader, "batch_size", None),
        "the number of batches an epoch": len(loader) if hasattr(loader, "__len__") else None,
        "the training set's size": getattr(loader, "dataset_size", None),
        "the training loader's shuffle seed": _digest(loader.state_dict()) if hasattr(loader, "state_dict") else None,
        "the random seed (xpnn.random state)": _digest(xpnn_random.get_rng_state()),
    }
    found.update(extra or {})
    return found


def _digest(value):
    return hashlib.sha256(repr(value).encode()).hexdigest()[:12]


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
