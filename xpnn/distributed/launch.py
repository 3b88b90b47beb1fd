"""How this process was launched: its rank, the number of ranks and its rank on this host, read
from the MPI launcher's environment, and the thread limits that keep N ranks on one host from
oversubscribing its cores.

This module imports only ``os``: the ``xpnn`` command calls :func:`limit_threads` before NumPy
and Numba load, because OpenBLAS, OpenMP and Numba read their thread counts once, at import."""

import os

# (rank, size, local rank, local size) variables of each launcher, first match wins.
LAUNCHERS = (
    ("MPICH / Intel MPI (hydra)", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MVAPICH", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"),
    ("Slurm srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def launch_environment(environ=None):
    """``dict(launcher, rank, size, local_rank, local_size)`` when an MPI launcher started this
    process with more than one rank, else None. Unparseable values count as no launch."""
    environ = os.environ if environ is None else environ
    for name, rank, size, local_rank, local_size in LAUNCHERS:
        if rank in environ and size in environ:
            try:
                found = dict(launcher=name, rank=int(environ[rank]), size=int(environ[size]),
                             local_rank=int(environ.get(local_rank, environ[rank])),
                             local_size=int(str(environ.get(local_size, environ[size])).split("(")[0].split(",")[0]))
            except ValueError:
                continue
            return found if found["size"] > 1 else None
    return None


def limit_threads(environ=None, cpus=None):
    """Under an MPI launch with several ranks on this host, give each rank ``cpus // local_size``
    threads (at least one) in every thread variable the user has not set; returns the count set,
    or None when nothing was launched or every variable was already set. Called before NumPy and
    Numba import (``xpnn.__main__``); from Python, set the variables before importing NumPy."""
    environ = os.environ if environ is None else environ
    launch = launch_environment(environ)
    if launch is None:
        return None
    cpus = cpus if cpus is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    threads = max(1, cpus // max(1, launch["local_size"]))
    unset = [name for name in THREAD_VARIABLES if name not in environ]
    for name in unset:
        environ[name] = str(threads)
    return threads if unset else None
