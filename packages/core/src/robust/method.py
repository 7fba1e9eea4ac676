"""The method contract: what a paper's algorithm implements; the engine does the rest.

A method is an ``nn.Module`` (as DomainBed's ``Algorithm``) that owns its networks,
optimizers and per-sample state, and implements:

* ``update(batch, step)``: one training step, written as the paper writes it; returns the
  losses to log.
* ``predict(x)``: logits for evaluation.

Optional: ``phases()`` for multi-phase runs (train, cluster, prune, retrain...);
``on_epoch_start/on_epoch_end``; ``epoch_indices`` for custom sampling (group-balanced,
upweighting); ``extra_state``/``load_extra_state`` for non-tensor state.

The engine owns device placement, seeding, AMP, data loading, evaluation, model selection,
checkpoints, resume, logging, progress and data parallelism. Per-sample state is indexed by
``batch.index``; keep it in buffers (``register_buffer``) with one row per training sample, so
that it is checkpointed, moved with the method and, in a run over several processes, given the
rows the other processes updated after every step. Running sums over batches (not per sample)
combine across processes through :func:`robust.distributed.all_reduce_sum`; gradients of every
optimizer registered with :meth:`Method.add_optimizer` are averaged before each step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from robust import distributed
from robust.config import MethodConfig, RunConfig
from robust.data import Batch, DatasetBundle, DatasetInfo
from robust.device import Precision

if TYPE_CHECKING:
    from robust.models import Classifier


@dataclass
class Phase:
    """One stage of a run.

    A training phase (``run`` is None) loops over ``split`` for ``epochs`` (or ``steps``; both
    None = the run's ``train.epochs``/``train.steps``) calling ``update`` (default: the method's).
    A non-training phase (clustering, an analysis) calls ``run()`` once. ``on_start`` runs when
    the phase begins (freeze weights, build masks). Each phase is checkpointed and resumable, and
    its end is kept (``checkpoints/phase-NAME.pt``) so that a later phase can be rerun alone.
    ``select=False``: the phase's evaluations go to the history but not to model selection (an
    intermediate model, such as the ERM model a pruning method starts from, is not the result).
    """

    name: str
    epochs: int | None = None
    steps: int | None = None
    split: str = "train"
    update: Callable[[Batch, int], dict[str, Any]] | None = None
    run: Callable[[], None] | None = None
    on_start: Callable[[], None] | None = None
    evaluate: bool = True
    batch_size: int | None = None
    #: Drop the incomplete last batch of each epoch (PyTorch's ``drop_last``), as some papers do.
    drop_last: bool = False
    select: bool = True


@dataclass
class MethodContext:
    """What the engine gives a method when it is built."""

    config: RunConfig
    info: DatasetInfo
    data: DatasetBundle
    device: torch.device
    precision: Precision
    run_dir: Path
    build_model: Callable[..., Classifier]
    build_loss: Callable[..., Callable[[Tensor, Tensor], Tensor]]
    batches: Callable[..., Iterator[Batch]]
    log: Callable[[str], None]
    #: ``group_agreement(assignment, split="train")``: how inferred groups match the true ones (ARI,
    #: purity, worst-group recall), or None; the true groups themselves may be withheld.
    group_agreement: Callable[..., dict[str, float] | None] = lambda assignment, split="train": None
    #: What the run explicitly leaves out of the method's paper (:mod:`robust_counterfactual.fidelity`): written to
    #: summary.json, marked by ``robust report``, never compared with the paper.
    opt_outs: list[dict[str, str]] = field(default_factory=list)

    def record_opt_out(self, option: str, detail: str) -> None:
        """Record that the user's ``option`` switched off part of the paper's method (``detail`` says what)."""
        self.opt_outs.append({"option": option, "detail": detail})
        self.log(f"[yellow]opt-out {option}: {detail}. This run is not the paper's method.[/yellow]")

    @property
    def num_train(self) -> int:
        """Number of training samples: the size of per-sample state tables."""
        return len(self.data.splits["train"])

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch on the train split (a final batch too small for BatchNorm on
        every process, under two samples each, is dropped)."""
        full, rest = divmod(self.num_train, self.config.train.batch_size)
        return full + (1 if rest >= 2 * distributed.world().size else 0)

    @property
    def epochs(self) -> int:
        """Length of the default training phase in epochs (derived from ``train.steps`` when set): schedules use it."""
        steps = self.config.train.steps
        return self.config.train.epochs if steps is None else max(1, -(-steps // self.steps_per_epoch))


@dataclass
class _Scheduled:
    scheduler: Any
    interval: Literal["step", "epoch", "manual"]


class Method(nn.Module):
    """Base class of every training method. Subclass, set ``Config``, implement ``update`` and ``predict``."""

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: Whether training batches may carry group and bias labels. False: the engine withholds them.
    uses_group_labels: ClassVar[bool] = False
    #: Named presets: partial config trees ({"method": {...}, "train": {...}, "model": {...}}).
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Preset picked automatically for a dataset name when none is given. The value may name
    #: dataset options in braces, filled in by ``str.format``: ``"cmnist-{conflict_pct:g}pct"``.
    dataset_presets: ClassVar[dict[str, str]] = {}

    def __init__(self, config: MethodConfig, ctx: MethodContext) -> None:
        super().__init__()
        self.config = config
        self.ctx = ctx
        self.phase: Phase | None = None
        self._optimizers: dict[str, torch.optim.Optimizer] = {}
        self._schedulers: dict[str, _Scheduled] = {}
        self._scaler_stepped = False
        #: This process's share of the current global batch: the weight of its gradients when they
        #: are averaged over processes (set by the engine for each training step).
        self.batch_share = 1.0 / distributed.world().size
        self._averaged: set[int] = set()

    # -- what a method implements ---------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, Tensor | float]:
        """One training step on ``batch``; ``step`` counts from 0 within the phase."""
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        """Class logits for a batch of inputs."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        """The stages of the run; one training phase by default."""
        return [Phase("train")]

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch of the current phase."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch (before evaluation)."""

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor | None:
        """The training sample order for ``epoch`` (indices may repeat: resampling). None = a random permutation."""
        return None

    def on_evaluation(self, record: dict[str, Any]) -> None:
        """Called after each evaluation with its record (``metrics`` has ``val/loss``, ``val/avg_acc``...):
        step a plateau schedule here."""

    @classmethod
    def default_amp(cls, config: MethodConfig) -> str | None:
        """The ``train.amp`` to use when the user leaves it at ``auto`` (None: the engine's choice).
        A method that double-backpropagates returns ``"off"``."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state to checkpoint (tensors belong in buffers)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # -- helpers a method calls -----------------------------------------------------------

    @classmethod
    def preset_for(cls, dataset: str, options: dict[str, Any] | None = None) -> str | None:
        """The preset picked for ``dataset`` with its (validated) ``options``, or None."""
        template = cls.dataset_presets.get(dataset)
        if template is None:
            return None
        try:
            return template.format(**(options or {}))
        except (KeyError, IndexError, ValueError):
            return None

    def add_optimizer(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None = None,
        interval: Literal["step", "epoch", "manual"] = "epoch",
    ) -> torch.optim.Optimizer:
        """Register an optimizer (and its LR schedule) so the engine checkpoints and steps it.

        ``interval``: the engine steps the schedule after every ``step`` or ``epoch``; ``manual``
        schedules are stepped by the method (a plateau schedule in :meth:`on_evaluation`).
        """
        self._optimizers[name] = optimizer
        optimizer.register_step_pre_hook(self._average_before_step)
        if scheduler is not None:
            self._schedulers[name] = _Scheduled(scheduler, interval)
        return optimizer

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def optimize(
        self,
        loss: Tensor,
        *optimizers: str,
        clip_grad_norm: float | None = None,
        retain_graph: bool = False,
    ) -> None:
        """zero_grad, backward (scaled under fp16), optional clipping, step: for the named optimizers (default all)."""
        chosen = [self._optimizers[n] for n in optimizers] if optimizers else list(self._optimizers.values())
        for opt in chosen:
            opt.zero_grad(set_to_none=True)
        scaler = self.ctx.precision.scaler
        (scaler.scale(loss) if scaler is not None else loss).backward(retain_graph=retain_graph)
        # Before clipping and the grad scaler's inf check, so that every process decides alike.
        distributed.average_gradients(_params(chosen), self.batch_share)
        self._averaged.update(id(opt) for opt in chosen)
        if clip_grad_norm is not None:
            if scaler is not None:
                for opt in chosen:
                    scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(list(_params(chosen)), clip_grad_norm)
        for opt in chosen:
            if scaler is not None:
                scaler.step(opt)
                self._scaler_stepped = True
            else:
                opt.step()

    def _average_before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """An optimizer stepped on gradients set by hand (not through :meth:`optimize`) averages them here."""
        if id(optimizer) in self._averaged:
            self._averaged.discard(id(optimizer))
            return
        distributed.average_gradients(_params([optimizer]), self.batch_share)

    def end_step(self) -> None:
        """Called by the engine after each ``update``: one grad-scaler update per iteration (fp16)."""
        if self._scaler_stepped and self.ctx.precision.scaler is not None:
            self.ctx.precision.scaler.update()
        self._scaler_stepped = False
        self._averaged.clear()

    def step_schedulers(self, interval: Literal["step", "epoch"]) -> None:
        """Called by the engine after each step and each epoch."""
        for entry in self._schedulers.values():
            if entry.interval == interval:
                entry.scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        return {f"lr_{name}": opt.param_groups[0]["lr"] for name, opt in self._optimizers.items()}

    def training_state(self) -> dict[str, Any]:
        """Everything to checkpoint: modules and buffers, optimizers, schedulers, extra state."""
        return {
            "modules": self.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self._optimizers.items()},
            "schedulers": {n: s.scheduler.state_dict() for n, s in self._schedulers.items()},
            "extra": self.extra_state(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["modules"])
        for name, opt_state in state["optimizers"].items():
            self._optimizers[name].load_state_dict(opt_state)
        for name, sched_state in state["schedulers"].items():
            self._schedulers[name].scheduler.load_state_dict(sched_state)
        self.load_extra_state(state.get("extra", {}))


def _params(optimizers: Iterable[torch.optim.Optimizer]) -> Iterator[Tensor]:
    for opt in optimizers:
        for group in opt.param_groups:
            yield from group["params"]
