"""Data-parallel training under ``torchrun``: the process group, each rank's share, collectives.

``torchrun --nproc_per_node=N -m lensing train ...`` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT in their environment.
``process_group()`` turns that environment into a torch.distributed process group (NCCL when
training on CUDA, one GPU per process, ``cuda:LOCAL_RANK``; gloo on the CPU) and tears it down
at the end. Without torchrun it does nothing, and every helper here degrades to the one-process
answer (``current()`` is rank 0 of 1, collectives return their input), so ``lensing.training.fit``
has a single code path.

How an epoch is shared (``shard_epoch``): every rank draws the same seeded permutation of the
training split, pads it by wrapping around to a multiple of the world size (as
``torch.utils.data.DistributedSampler`` does by default, so at most ``world_size - 1`` images
are seen twice in an epoch), and takes every ``world_size``-th index starting at its rank.
Every rank thus has ``ceil(N / world_size)`` images and the same number of steps, and step k
of the whole job covers one contiguous block of ``batch_size * world_size`` indices of the
permutation: the global batch is the per-rank ``--batch-size`` times the world size.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lensing.core.runtime import pick_device, unwrap

# Environment variables torchrun (torch.distributed.run) sets for every process it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# How long a collective may wait for a slow rank (e.g. rank 0 writing a checkpoint, or
# reading and caching the data set first) before the job is declared hung.
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """Where this process stands in a data-parallel job.

    rank: global index of this process, 0..world_size-1.
    world_size: number of processes over all machines.
    local_rank: index of this process on its machine (its GPU index).
    local_world_size: processes on this machine (they share its CPU cores).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        """True when several processes train together (collectives are needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and prints (global rank 0)."""
        return self.rank == 0


def current() -> World:
    """This process's place in the initialized process group; rank 0 of 1 without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    world_size = dist.get_world_size()
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    return World(
        rank=dist.get_rank(),
        world_size=world_size,
        local_rank=_env_int("LOCAL_RANK", dist.get_rank() % local_world_size),
        local_world_size=local_world_size,
    )


def launched_by_torchrun() -> bool:
    """True when the environment asks for more than one process (torchrun's variables)."""
    return all(name in os.environ for name in TORCHRUN_ENV) and _env_int("WORLD_SIZE", 1) > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}; expected an integer") from None


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[World]:
    """Join the process group torchrun's environment describes, for the duration of the block.

    device: the training device as given to ``lensing.core.runtime.pick_device`` ("auto", "cpu",
        "cuda", ...). A CUDA device means the NCCL backend and ``cuda:LOCAL_RANK`` for this
        process; anything else means gloo on the CPU.

    Yields the World. Outside torchrun (or with a world of one), or when a process group is
    already initialized (then it is left as it is at the end), this only yields ``current()``.
    On the CPU each process gets ``cores // LOCAL_WORLD_SIZE`` threads, so N processes on one
    machine do not oversubscribe it; torchrun's own default (``OMP_NUM_THREADS=1`` when the
    variable is unset) is replaced, while any other explicit ``OMP_NUM_THREADS`` is kept.
    """
    if dist.is_initialized() or not launched_by_torchrun():
        yield current()
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; cannot run under torchrun")
    kind = pick_device(device).type
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", 1)
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                "visible; expected --nproc_per_node <= the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        dist.init_process_group(
            "nccl", timeout=TIMEOUT, device_id=torch.device("cuda", local_rank)
        )
    elif kind == "cpu":
        _share_cpu_cores(local_world_size)
        dist.init_process_group("gloo", timeout=TIMEOUT)
    else:
        raise ValueError(
            f"device {device!r} resolves to {kind}, which data-parallel training does not "
            "support; expected a CUDA device or --device cpu"
        )
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def _share_cpu_cores(local_world_size: int) -> None:
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads not in (None, "1"):
        return  # chosen by the user, not by torchrun
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(1, local_world_size)))


def rank_device(device: torch.device) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` in a CUDA job, else ``device``.

    Raises ValueError for a device a data-parallel job cannot use (MPS, or one fixed GPU
    index that every rank would share).
    """
    world = current()
    if not world.distributed:
        return device
    if device.type == "cuda":
        if device.index is not None and device.index != world.local_rank:
            raise ValueError(
                f"device {str(device)!r} under torchrun would put every rank on one GPU; "
                "expected --device auto or cuda (each rank then uses cuda:LOCAL_RANK)"
            )
        return torch.device("cuda", world.local_rank)
    if device.type != "cpu":
        raise ValueError(
            f"device {str(device)!r} is not supported by data-parallel training; "
            "expected a CUDA device or cpu"
        )
    return device


# ----------------------------------------------------------------------------- sharding


def shard_epoch(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of one epoch's permutation ``order`` (1-D LongTensor of N indices).

    The permutation is padded by wrapping around to ``ceil(N / world_size) * world_size``
    indices and strided: rank r gets ``padded[r::world_size]``. Shares are disjoint except
    for the ``padded - N`` wrapped indices (the first ones of ``order``), all have
    ``ceil(N / world_size)`` indices, and together they cover ``order``. With one process
    this is ``order`` itself.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank!r} out of range; expected 0 <= rank < {world_size}")
    if world_size == 1:
        return order
    n = len(order)
    if n == 0:
        return order
    padded_size = -(-n // world_size) * world_size
    padded = order.repeat(-(-padded_size // n))[:padded_size]
    return padded[rank::world_size]


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice ``[start, stop)`` of ``n`` items that ``rank`` evaluates.

    Slices of ``ceil(n / world_size)`` items in rank order, the last ones shorter or empty,
    so concatenating every rank's results in rank order restores the original order.
    """
    size = -(-n // world_size)
    return min(n, rank * size), min(n, (rank + 1) * size)


# ----------------------------------------------------------------------------- collectives


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` reduced over all ranks ("sum" or "max"); returned on its own device."""
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"unknown reduction {op!r}; expected one of {sorted(ops)}")
    if not current().distributed:
        return tensor
    buffer = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buffer, op=ops[op])
    return buffer.to(tensor.device)


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (rows may differ in number) concatenated in rank order.

    tensor: shape (n_rank, ...), the same trailing shape and dtype on every rank. The rows
    are padded to the largest count for ``all_gather`` and the padding is cut off again.
    """
    world = current()
    if not world.distributed:
        return tensor
    device = _comm_device()
    count = torch.tensor([len(tensor)], device=device)
    counts = [torch.zeros_like(count) for _ in range(world.world_size)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    longest = max(counts)
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: len(tensor)] = tensor.to(device)
    pieces = [torch.empty_like(padded) for _ in range(world.world_size)]
    dist.all_gather(pieces, padded)
    return torch.cat([p[:c] for p, c in zip(pieces, counts, strict=True)]).to(tensor.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable object) on every rank; ``obj`` alone without one."""
    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list in rank order (``[obj]`` without a process group)."""
    world = current()
    if not world.distributed:
        return [obj]
    boxes: list[Any] = [None] * world.world_size
    dist.all_gather_object(boxes, obj)
    return boxes


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group)."""
    if not current().distributed:
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@contextlib.contextmanager
def local_main_first() -> Iterator[None]:
    """Run the block on each machine's local rank 0 first, then on the other ranks.

    For work that fills a cache on local disk (reading the data set and writing its
    consolidated cache, fetching ImageNet weights): the first process does it, the others
    then find it done instead of racing to write the same files.
    """
    world = current()
    if world.local_rank != 0:
        barrier()
    try:
        yield
    finally:
        if world.local_rank == 0:
            barrier()


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) into every rank's model.

    DistributedDataParallel synchronizes buffers at the start of each forward pass, so after
    the last training step each rank's running statistics include its own last batch. This
    makes every rank's model equal to rank 0's (which is the one saved) before validation.
    """
    if not current().distributed:
        return
    device = _comm_device()
    with torch.no_grad():
        for buffer in unwrap(model).buffers():
            staged = buffer.detach().to(device, copy=True)
            dist.broadcast(staged, src=src)
            buffer.copy_(staged.to(buffer.device))


def warn_if_alone() -> None:
    """Warn when torchrun started several processes but none joined a process group."""
    if launched_by_torchrun() and not dist.is_initialized():
        warnings.warn(
            f"torchrun started {os.environ['WORLD_SIZE']} processes but this one trains "
            "alone (no process group); use `python -m lensing train` or wrap the call in "
            "lensing.core.distributed.process_group()",
            RuntimeWarning,
            stacklevel=3,
        )


def on_main_then_shared(make: Callable[[], Any]) -> Any:
    """``make()`` run on rank 0 only, its result (or its error) handed to every rank.

    An error on rank 0 is raised on every rank (same type when it can be rebuilt from its
    message, else RuntimeError), so no rank is left waiting in a collective.
    """
    if not current().distributed:
        return make()
    result, failure = None, None
    if current().is_main:
        try:
            result = make()
        except Exception as error:
            kind = type(error)
            try:
                pickle.dumps(kind)
            except Exception:  # a class defined in a function cannot be sent
                kind = RuntimeError
            broadcast_object((None, (kind, str(error))))
            raise
    result, failure = broadcast_object((result, failure))
    if failure is not None:
        kind, message = failure
        try:
            error = kind(message)
        except Exception:
            error = RuntimeError(message)
        raise error
    return result


def stopped_by(callback: Callable[..., None], *args: Any) -> bool:
    """Call ``callback(*args)`` on rank 0; True on the other ranks when it raised there.

    On rank 0 its exception propagates (after the other ranks have been told to stop, so
    none of them waits forever for the next collective).
    """
    error: Exception | None = None
    if current().is_main:
        try:
            callback(*args)
        except Exception as caught:  # e.g. optuna.TrialPruned: any exception stops training
            error = caught
    stop = broadcast_object(error is not None)
    if error is not None:
        raise error
    return stop
