"""Data-parallel training over several processes, started by ``torchrun`` (one process per GPU).

``torchrun --nproc-per-node N -m robust run METHOD ...`` (or ``robust run --nproc N``) starts N
copies of the run; each reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from its environment, joins
the process group (NCCL on GPUs, gloo on the CPU) and trains on its share of every global batch.
What keeps the copies one run, for every method and without code in the method packages:

* gradients are averaged over the processes before every optimizer step (weighted by each
  process's share of the batch), so every copy takes the same step: DDP's semantics;
* per-sample state (buffers with one row per training sample, indexed by ``batch.index``) gets
  the rows the other processes updated after each step;
* floating-point buffers that are not per sample (BatchNorm statistics, running sums) are
  averaged before each evaluation and checkpoint; the rest are broadcast from rank 0;
* evaluation splits are sharded and the predictions gathered before group metrics are computed;
* only rank 0 writes the run directory.

Why not ``torch.nn.parallel.DistributedDataParallel``: its reducer is driven by ``.backward()``
through the wrapper's own ``forward``. Our methods also take ``torch.autograd.grad`` (CLP's
meta-gradient, saliency terms, IRM's penalty), call ``torch.func.functional_call`` on the bare
module (PruSC's masks, CLP's virtual step), reach into submodules (``model.features``) and step
optimizers on hand-set gradients; DDP supports none of these. Averaging at the optimizer is the
same arithmetic, applied where every method's step goes through.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from robust.errors import DeviceError


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank, the number of processes, its local GPU index."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> World:
    """The world torchrun describes in the environment (a single process when it does not)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise DeviceError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc}). Start distributed runs with torchrun "
            "(or `robust run --nproc N`), which sets them."
        ) from None
    return World(rank, size, local)


def world() -> World:
    """This process's world: the joined process group, or what the environment says before joining."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), launched().local_rank)
    return launched()


def setup(device_spec: str) -> torch.device | None:
    """Join the process group once (a no-op in a single process); return this process's device.

    ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` (one GPU per process, NCCL); ``cpu`` uses gloo.
    """
    env = launched()
    if not env.distributed:
        return None
    spec = device_spec.strip().lower()
    use_cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available() or env.local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"Process {env.rank} of {env.size} needs GPU {env.local_rank}, but this machine has "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}. Start at most one process per "
                "GPU (--nproc-per-node), or train on the CPU with --device cpu."
            )
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30), device_id=device if use_cuda else None)
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world().distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (builds a dataset cache), the others after it (and find it built)."""
    w = world()
    if w.distributed and not w.is_main:
        dist.barrier()
    yield
    if w.distributed and w.is_main:
        dist.barrier()


def broadcast_object(value):
    """Rank 0's ``value`` on every process."""
    if not world().distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over the processes, in place (itself in a single process): for running sums."""
    if world().distributed:
        dist.all_reduce(tensor)
    return tensor


def gather_rows(tensor: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Every process's rows concatenated in rank order (counts may differ by process; pass
    ``sizes``, the row count of each process, when known to save one exchange)."""
    w = world()
    if not w.distributed:
        return tensor
    if sizes is None:
        sizes = row_counts(tensor.shape[0], tensor.device)
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def row_counts(count: int, device: torch.device) -> list[int]:
    """Every process's ``count``."""
    local = torch.tensor([count], device=device)
    counts = [torch.zeros_like(local) for _ in range(world().size)]
    dist.all_gather(counts, local)
    return [int(c) for c in counts]


def shard(indices: Tensor, w: World | None = None) -> Tensor:
    """This process's contiguous share of ``indices`` (sizes differ by at most one)."""
    w = w or world()
    if not w.distributed:
        return indices
    return indices.tensor_split(w.size)[w.rank]


def average_gradients(params: Iterable[Tensor], weight: float) -> None:
    """Replace each gradient by the sum over processes of ``weight × gradient`` (``weight`` = this
    process's share of the global batch, so the result is the global batch's mean gradient).

    A parameter without a gradient on some processes (unused in their part of the batch) gets zeros
    there; one without a gradient anywhere keeps none, as in a single process.
    """
    w = world()
    if not w.distributed:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has)
    present = [p for p, n in zip(params, has.tolist(), strict=True) if n > 0]
    for p in present:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for dtype in {p.grad.dtype for p in present}:  # one flat all-reduce per dtype (DDP's buckets)
        grads = [p.grad for p in present if p.grad.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


class GradientAverager:
    """Averages gradients over processes before every optimizer step: owned by the engine, handed to
    the method in its context (``ctx.gradients``), so a method never deals with processes.

    Gradients reach an optimizer two ways: :meth:`robust.method.Method.optimize` averages them after
    its backward (before clipping and the grad scaler's inf check, so that every process decides
    alike); an optimizer stepped by hand averages them in a step pre-hook (:meth:`attach`). Either
    way once per step. ``batch_share`` is this process's share of the global batch (the weight of its
    gradients), set by the engine for each training step. In a single process nothing happens.
    """

    def __init__(self) -> None:
        self.batch_share = 1.0 / world().size
        self._averaged: set[int] = set()

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_pre_hook(self._before_step)

    def average(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        optimizers = list(optimizers)
        average_gradients(_optimizer_params(optimizers), self.batch_share)
        self._averaged.update(id(opt) for opt in optimizers)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if id(optimizer) in self._averaged:
            self._averaged.discard(id(optimizer))
            return
        average_gradients(_optimizer_params([optimizer]), self.batch_share)

    def end_step(self) -> None:
        """After each training step (and outside them: every process does the same)."""
        self._averaged.clear()


def _optimizer_params(optimizers: Iterable[torch.optim.Optimizer]) -> Iterator[Tensor]:
    for opt in optimizers:
        for group in opt.param_groups:
            yield from group["params"]


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every process (after building or loading)."""
    if not world().distributed:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def per_sample_buffers(module: nn.Module, num_samples: int) -> list[Tensor]:
    """Buffers with one row per sample of the split being trained on: per-sample state."""
    return [b for b in module.buffers() if b.dim() >= 1 and b.shape[0] == num_samples]


def share_rows(buffers: list[Tensor], index: Tensor) -> None:
    """After a step: every process writes the rows the others updated (rows ``index`` of each).
    One exchange for the indices and one per dtype for the rows of all tables together."""
    if not world().distributed or not buffers:
        return
    sizes = row_counts(index.shape[0], index.device)
    all_index = gather_rows(index, sizes)
    for dtype in dict.fromkeys(b.dtype for b in buffers):
        tables = [b for b in buffers if b.dtype == dtype]
        rows = torch.cat([t[index].reshape(len(index), -1) for t in tables], dim=1)
        rows = gather_rows(rows, sizes)
        offset = 0
        for table in tables:
            width = table[0].numel()
            table[all_index] = rows[:, offset : offset + width].reshape(-1, *table.shape[1:])
            offset += width


def average_buffers(module: nn.Module, skip: Iterable[Tensor] = ()) -> None:
    """Average floating-point buffers (BatchNorm statistics, running sums) over the processes and
    broadcast the others from rank 0, so that every process evaluates and saves the same model.
    Buffers in ``skip`` (per-sample tables, already shared row by row) are left as they are."""
    w = world()
    if not w.distributed:
        return
    skipped = {id(b) for b in skip}
    for buffer in module.buffers():
        if id(buffer) in skipped:
            continue
        if buffer.is_floating_point():
            dist.all_reduce(buffer.data)
            buffer.data.div_(w.size)
        else:
            dist.broadcast(buffer.data, src=0)
