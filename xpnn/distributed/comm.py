"""Communicators: the few collective operations data-parallel training needs, behind one
interface, on three transports.

- :class:`SingleProcess`: one rank; every operation is the identity. A Trainer without
  ``distributed`` behaves as before.
- :class:`MPICommunicator`: mpi4py over any MPI (the ``mpich`` wheel gives ``mpiexec`` with no
  system MPI). Arrays move with the buffer-protocol methods (``Allreduce``, ``Bcast``: no pickling);
  only the small start-up checks go through ``allgather`` of Python objects. CuPy arrays are
  staged through host memory (the MPI wheels are not CUDA-aware).
- :class:`NCCLCommunicator`: one process per GPU with CuPy; NCCL (``cupy.cuda.nccl``) reduces and
  broadcasts device buffers on the current stream, and MPI starts the ranks, shares NCCL's unique
  id and carries the object collectives and the abort.

The shape follows ChainerMN's communicators (an MPI communicator wrapped by one that sends the
arrays over NCCL) and PyTorch's process groups (rank, size, broadcast, all-reduce, barrier);
nothing of mpi4py or CuPy is imported until a communicator that needs it is made.
"""

import sys

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, DistributedError
from .launch import launch_environment

KINDS = ("auto", "mpi", "nccl", "none")


class Communicator:
    """The interface. ``rank`` (0..size-1), ``size``, ``local_rank`` (the rank among this host's
    processes: the GPU a rank uses). Collectives must be called by every rank in the same order."""

    name = "communicator"
    rank, size, local_rank = 0, 1, 0

    def broadcast(self, array, root=0):
        """Overwrite ``array`` (contiguous, NumPy or CuPy) on every rank with ``root``'s, in place."""
        raise NotImplementedError

    def allreduce_sum(self, buffer):
        """Replace the flat contiguous ``buffer`` on every rank with the elementwise sum over ranks, in place."""
        raise NotImplementedError

    def allreduce_mean(self, buffer):
        """Replace ``buffer`` with the elementwise mean over ranks, in place."""
        self.allreduce_sum(buffer)
        if self.size > 1:
            buffer /= self.size
        return buffer

    def allgather(self, value):
        """Every rank's small picklable ``value``, as a list indexed by rank (for start-up checks)."""
        raise NotImplementedError

    def barrier(self):
        raise NotImplementedError

    def abort(self, status=1):
        """End every rank of the job now (no clean-up); used after a rank's error is printed."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


class SingleProcess(Communicator):
    """One process: collectives change nothing."""

    name = "none"

    def broadcast(self, array, root=0):
        return array

    def allreduce_sum(self, buffer):
        return buffer

    def allgather(self, value):
        return [value]

    def barrier(self):
        pass

    def abort(self, status=1):
        sys.stderr.flush()
        raise SystemExit(status)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BackendUnavailableError(f"distributed training over MPI needs mpi4py and an MPI: pip install 'xpnn[mpi]' ({exc})") from None
    return MPI


def _is_numpy(array):
    return isinstance(array, np.ndarray)


class MPICommunicator(Communicator):
    """Ranks of an MPI job (``mpiexec -n N``), over ``comm`` (default ``MPI.COMM_WORLD``)."""

    name = "mpi"

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = local.Get_rank()
        local.Free()

    def broadcast(self, array, root=0):
        if self.size == 1:
            return array
        if _is_numpy(array):
            self.comm.Bcast(_contiguous(array), root=root)
        else:  # a device array: through host memory
            host = np.ascontiguousarray(_to_host(array))
            self.comm.Bcast(host, root=root)
            array[...] = _like(array, host)
        return array

    def allreduce_sum(self, buffer):
        if self.size == 1:
            return buffer
        if _is_numpy(buffer):
            self.comm.Allreduce(self.MPI.IN_PLACE, _contiguous(buffer), op=self.MPI.SUM)
        else:
            host = np.ascontiguousarray(_to_host(buffer))
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            buffer[...] = _like(buffer, host)
        return buffer

    def allgather(self, value):
        return self.comm.allgather(value)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, status=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(status)


class NCCLCommunicator(MPICommunicator):
    """One process per GPU: arrays (CuPy, on this rank's GPU) are reduced and broadcast by NCCL on
    the current CUDA stream; MPI launches the ranks, shares NCCL's unique id and carries
    ``allgather``, ``barrier`` and ``abort``. Selects GPU ``local_rank`` before making the NCCL
    communicator. Not run here (no GPU on the machine it was written on): its calls are checked
    against a stand-in of ``cupy.cuda.nccl`` in tests/test_distributed.py."""

    name = "nccl"

    def __init__(self, comm=None, nccl=None, cupy=None):
        super().__init__(comm)
        if cupy is None:
            try:
                import cupy
                from cupy.cuda import nccl
            except ImportError as exc:
                raise BackendUnavailableError(f"--distributed nccl needs CuPy with NCCL: pip install 'xpnn[nccl]' and a cupy-cuda wheel ({exc})") from None
        if not getattr(nccl, "available", True):
            raise BackendUnavailableError("--distributed nccl: cupy.cuda.nccl is not available (install nvidia-nccl-cu12 or -cu13: pip install 'xpnn[nccl]')")
        self.cupy, self.nccl = cupy, nccl
        count = cupy.cuda.runtime.getDeviceCount()
        if self.local_rank >= count:
            raise DistributedError(f"rank {self.rank}: expected a GPU for local rank {self.local_rank}, found {count} GPU(s) on this host; start at most {count} ranks a host")
        cupy.cuda.Device(self.local_rank).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _dtype(self, array):
        kinds = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32, np.dtype(np.float64): self.nccl.NCCL_FLOAT64,
                 np.dtype(np.float16): self.nccl.NCCL_FLOAT16, np.dtype(np.int32): self.nccl.NCCL_INT32,
                 np.dtype(np.int64): self.nccl.NCCL_INT64}
        try:
            return kinds[np.dtype(array.dtype)]
        except KeyError:
            raise DistributedError(f"NCCL: expected a float16/32/64 or int32/64 array, found dtype {array.dtype}") from None

    def _stream(self):
        return self.cupy.cuda.get_current_stream().ptr

    def broadcast(self, array, root=0):
        if _is_numpy(array):
            return super().broadcast(array, root)
        self.nccl_comm.bcast(array.data.ptr, array.size, self._dtype(array), root, self._stream())
        return array

    def allreduce_sum(self, buffer):
        if _is_numpy(buffer):
            return super().allreduce_sum(buffer)
        ptr = buffer.data.ptr
        self.nccl_comm.allReduce(ptr, ptr, buffer.size, self._dtype(buffer), self.nccl.NCCL_SUM, self._stream())
        return buffer

    def abort(self, status=1):
        try:
            self.nccl_comm.abort()
        finally:
            super().abort(status)


def _contiguous(array):
    if not array.flags.c_contiguous:
        raise DistributedError(f"expected a C-contiguous array to communicate in place, found one of shape {array.shape} with strides {array.strides}")
    return array


def _to_host(array):
    from .. import backend

    return backend.to_numpy(array)


def _like(array, host):
    from .. import backend

    return backend.asarray(host, backend.namespace_of(array), device=backend.resolve_device(array))


def get_communicator(kind="auto"):
    """The communicator for ``kind``: "auto" (MPI when an MPI launcher started several ranks, else
    one process), "mpi", "nccl" (MPI-launched, one GPU a rank) or "none"; a Communicator is
    returned as it is. An explicit "mpi"/"nccl" without mpi4py is a BackendUnavailableError."""
    if isinstance(kind, Communicator):
        return kind
    if kind is True:
        kind = "auto"
    if kind in (None, False):
        kind = "none"
    if kind not in KINDS:
        raise ConfigError(f"distributed: expected a Communicator or one of {', '.join(KINDS)}, found {kind!r}")
    if kind == "none":
        return SingleProcess()
    if kind == "auto":
        if launch_environment() is None:
            return SingleProcess()
        kind = "mpi"
    return MPICommunicator() if kind == "mpi" else NCCLCommunicator()
