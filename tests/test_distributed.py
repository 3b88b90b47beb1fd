"""Data-parallel training (issue 18): N-rank runs under ``mpiexec -n N`` against one process,
rank-0-only output, failures that end every rank, start-up agreement checks, resume; and, without
MPI, the launch detection, shards, thread limits and the NCCL communicator's calls (against a
stand-in of cupy.cuda.nccl: no GPU here)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xpnn.distributed import launch_environment, limit_threads
from xpnn.distributed.data_parallel import shard_bounds

HERE = Path(__file__).parent
WORKER = str(HERE / "distributed_worker.py")
MPIEXEC = shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None, reason="needs mpi4py and mpiexec: pip install 'xpnn[mpi]'"
)
TIMEOUT = 60


def _run(args, ranks=None, timeout=TIMEOUT):
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"):
        env.pop(name, None)  # a test run itself under mpiexec starts clean jobs
    command = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + args
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    return done, time.monotonic() - start


def _worker(mode, out, epochs=2, model="mlp", ranks=None):
    return _run([sys.executable, WORKER, mode, str(out), str(epochs), model], ranks)[0]


def _weights(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One-process runs: (model kind, epochs) -> (weights, history)."""
    found = {}
    for model, epochs in (("mlp", 2), ("cnn", 2), ("mlp", 1)):
        out = tmp_path_factory.mktemp(f"ref-{model}-{epochs}")
        done = _worker("train", out, epochs, model)
        assert done.returncode == 0, done.stderr
        found[model, epochs] = (_weights(out / "rank0.npz"), json.loads((out / "rank0.json").read_text())["history"], out)
    return found


# ---- without MPI --------------------------------------------------------------------------------


def test_launch_environment_reads_each_launcher():
    assert launch_environment({}) is None
    assert launch_environment({"PMI_RANK": "0", "PMI_SIZE": "1"}) is None  # one rank: no distribution
    hydra = {"PMI_RANK": "2", "PMI_SIZE": "3", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "1"}
    assert launch_environment(hydra) == dict(launcher="MPICH / Intel MPI (hydra)", rank=2, size=3, local_rank=0, local_size=1)
    ompi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    assert launch_environment(ompi)["local_size"] == 2


def test_limit_threads_divides_the_cores_and_keeps_what_the_user_set():
    env = {"PMI_RANK": "0", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "4", "OMP_NUM_THREADS": "3"}
    assert limit_threads(env, cpus=8) == 2
    assert env["OMP_NUM_THREADS"] == "3" and env["OPENBLAS_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == "2"
    env = {"PMI_RANK": "0", "PMI_SIZE": "3", "MPI_LOCALNRANKS": "3"}
    assert limit_threads(env, cpus=2) == 1  # more ranks than cores: one thread each
    assert limit_threads({}, cpus=8) is None


@pytest.mark.parametrize("n,size", [(16, 2), (16, 3), (2, 3), (1, 2), (5, 4)])
def test_shards_cover_the_batch_in_order(n, size):
    bounds = [shard_bounds(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_dataloader_shards_join_to_the_one_process_batches():
    from xpnn.data import DataLoader

    x, y = np.arange(50.0).reshape(50, 1), np.arange(50)
    whole = [yb.tolist() for _, yb in DataLoader(x, y, batch_size=16, shuffle=True, seed=3)]
    parts = [list(DataLoader(x, y, batch_size=16, shuffle=True, seed=3).shard_batches(r, 3)) for r in range(3)]
    joined = [sum((parts[r][i][1].tolist() for r in range(3)), []) for i in range(len(whole))]
    assert joined == whole
    assert [p[2] for p in parts[0]] == [16, 16, 16, 2]
    assert parts[0][-1][0].shape[0] == 0  # the last batch of 2 leaves rank 0 empty


def test_trainer_distributed_without_a_launch_is_one_process():
    import xpnn
    from xpnn import optim
    from xpnn.train import Trainer

    model = xpnn.models.MLP([4, 3])
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), distributed=True, verbose=False)
    assert trainer._dp is None and trainer.rank == 0
    trainer.fit((np.ones((8, 4), np.float32), np.zeros(8, np.int64)), 1, progress=False)


class _FakeMPIComm:
    def __init__(self, rank=1, size=2):
        self.rank, self.size, self.sent = rank, size, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Split_type(self, kind, key=0):
        return self

    def Free(self):
        pass

    def bcast(self, value, root=0):
        self.sent.append(value)
        return "uid-from-rank-0"


class _FakeDeviceArray:
    def __init__(self, values):
        self.host = np.ascontiguousarray(values)
        self.size, self.dtype = self.host.size, self.host.dtype
        self.data = type("Memory", (), {"ptr": self.host.ctypes.data})()


class _FakeNccl:
    available = True
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT32, NCCL_INT64, NCCL_SUM = 6, 7, 8, 2, 4, 0

    def __init__(self):
        self.calls = []
        fake = self

        class NcclCommunicator:
            def __init__(self, size, uid, rank):
                fake.calls.append(("init", size, uid, rank))

            def allReduce(self, send, recv, count, dtype, op, stream):
                fake.calls.append(("allReduce", send == recv, count, dtype, op, stream))

            def bcast(self, ptr, count, dtype, root, stream):
                fake.calls.append(("bcast", count, dtype, root, stream))

            def abort(self):
                fake.calls.append(("abort",))

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        return "uid-made-here"


class _FakeCupy:
    def __init__(self, gpus=2):
        self.used = []
        fake = self

        class Device:
            def __init__(self, index):
                self.index = index

            def use(self):
                fake.used.append(self.index)

        runtime = type("Runtime", (), {"getDeviceCount": staticmethod(lambda: gpus)})
        stream = type("Stream", (), {"ptr": 1234})()
        self.cuda = type("Cuda", (), {"runtime": runtime, "Device": Device, "get_current_stream": staticmethod(lambda: stream)})


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="needs mpi4py: pip install 'xpnn[mpi]'")
def test_nccl_communicator_calls_against_its_interface():
    """The NCCL path's calls (device, unique id over MPI, in-place allReduce and bcast on the current
    stream, dtype codes) checked with stand-ins: there is no GPU here, so it never ran on one."""
    from xpnn.distributed import NCCLCommunicator
    from xpnn.errors import DistributedError

    nccl, cupy, mpi = _FakeNccl(), _FakeCupy(), _FakeMPIComm(rank=1, size=2)
    comm = NCCLCommunicator(comm=mpi, nccl=nccl, cupy=cupy)
    assert (comm.rank, comm.size, comm.local_rank, cupy.used) == (1, 2, 1, [1])
    assert mpi.sent == [None] and nccl.calls[0] == ("init", 2, "uid-from-rank-0", 1)
    comm.allreduce_sum(_FakeDeviceArray(np.zeros(10, np.float32)))
    comm.broadcast(_FakeDeviceArray(np.zeros(3, np.float64)), root=0)
    assert nccl.calls[1:] == [("allReduce", True, 10, 7, 0, 1234), ("bcast", 3, 8, 0, 1234)]
    with pytest.raises(DistributedError, match="found dtype bool"):
        comm.allreduce_sum(_FakeDeviceArray(np.zeros(2, bool)))
    with pytest.raises(DistributedError, match="found 1 GPU"):
        NCCLCommunicator(comm=_FakeMPIComm(rank=1), nccl=_FakeNccl(), cupy=_FakeCupy(gpus=1))


# ---- under mpiexec --------------------------------------------------------------------------------


@needs_mpi
@pytest.mark.parametrize("ranks,model", [(2, "mlp"), (3, "mlp"), (2, "cnn")])
def test_n_ranks_equal_one_process(tmp_path, reference, ranks, model):
    """Two epochs of 4 steps (the last global batch of 2: at N = 3 one rank's shard is empty) in
    float64: every rank's weights equal the one-process run's to summation order, and each other
    exactly; the reported (global) metrics are the same."""
    done = _worker("train", tmp_path, 2, model, ranks)
    assert done.returncode == 0, done.stderr
    want, history, _ = reference[model, 2]
    first = _weights(tmp_path / "rank0.npz")
    for rank in range(ranks):
        got = _weights(tmp_path / f"rank{rank}.npz")
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-13, err_msg=f"rank {rank} {name}")
            np.testing.assert_array_equal(got[name], first[name])
    got_history = json.loads((tmp_path / "rank0.json").read_text())["history"]
    for key in ("loss", "acc", "val_loss", "val_acc"):
        np.testing.assert_allclose(got_history[key], history[key], rtol=1e-9)


@needs_mpi
def test_only_rank_0_prints_and_writes(tmp_path):
    done = _worker("train", tmp_path, 2, "mlp", 2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch 1/2") == 1 and done.stdout.count("epoch 2/2") == 1
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["last_saved"] for r in ranks] == [2, None]
    assert (tmp_path / "ckpt.npz").exists()


@needs_mpi
def test_a_rank_that_raises_ends_every_rank_with_one_message(tmp_path):
    done, seconds = _run([sys.executable, WORKER, "bad_data", str(tmp_path)], 3)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("xpnn: error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("xpnn: error: rank 1 of 3: CrossEntropyLoss: expected class labels in [0, 2]")
    assert seconds < 30


@needs_mpi
def test_a_killed_rank_ends_the_job_and_the_checkpoint_stays_loadable(tmp_path):
    from xpnn.train import load_checkpoint

    done, seconds = _run([sys.executable, WORKER, "kill", str(tmp_path), "3"], 2)
    assert done.returncode != 0 and seconds < 30
    assert load_checkpoint(tmp_path / "ckpt.npz").epoch == 1


@needs_mpi
def test_mismatched_seeds_are_found_at_start(tmp_path):
    done, _ = _run([sys.executable, WORKER, "seed", str(tmp_path)], 2)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("xpnn: error:")]
    assert len(errors) == 1, done.stderr
    assert "ranks disagree on the training loader's shuffle seed: rank 0 has" in errors[0] and "rank 1 has" in errors[0]
    assert not (tmp_path / "rank0.npz").exists()


@needs_mpi
def test_two_ranks_resume_a_one_process_checkpoint(tmp_path, reference):
    shutil.copy(reference["mlp", 1][2] / "ckpt.npz", tmp_path / "ckpt.npz")
    done = _worker("resume", tmp_path, 2, "mlp", 2)
    assert done.returncode == 0, done.stderr
    want = reference["mlp", 2][0]
    for rank in range(2):
        got = _weights(tmp_path / f"rank{rank}.npz")
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-13)


@needs_mpi
def test_cli_under_mpiexec_matches_one_process(tmp_path):
    xpnn_cmd = [sys.executable, "-m", "xpnn", "train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--no-progress"]
    one, _ = _run(xpnn_cmd + ["--out", str(tmp_path / "one")])
    two, _ = _run(xpnn_cmd + ["--out", str(tmp_path / "two")], 2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert "on 2 ranks (mpi)" in two.stdout and two.stdout.count("test accuracy") == 1
    last = [line for line in one.stdout.splitlines() if line.startswith("test accuracy")]
    assert last == [line for line in two.stdout.splitlines() if line.startswith("test accuracy")]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
