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
optimizer registered with :meth:`Method.add_optimizer` are averaged before each step by the
engine's :class:`robust.distributed.GradientAverager` (``ctx.gradients``).
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
    A non-training phase (clustering, an analysis) calls ``run()`` once, under ``torch.no_grad()``
    with the method in eval mode unless ``grad=True``; a dict it returns (numbers, or lists of
    numbers) is recorded in history.h5 (its numbers, as ``NAME/KEY``) and in summary.json under
    ``phase_results``. ``on_start``
    runs when the phase begins (freeze weights, build masks). Each phase is checkpointed and
    resumable, and its end is kept (``checkpoints/phase-NAME.pt``) so that a later phase can be
    rerun alone. ``select=False``: the phase's evaluations go to the history but not to model
    selection (an intermediate model, such as the ERM model a pruning method starts from, is not
    the result).

    A phase carries what differs in it, so that a method never switches on its phase's name:
    ``epoch_indices``, ``on_epoch_start``, ``on_epoch_end`` and ``predict`` replace the method's
    own during the phase (None: the method's), and ``optimizers`` names the optimizers the phase
    trains (names given to :meth:`Method.add_optimizer`): ``optimize(loss)`` steps those, and their
    learning-rate schedules advance only during this phase. An optimizer no phase names is the
    default of every phase that names none.
    """

    name: str
    epochs: int | None = None
    steps: int | None = None
    split: str = "train"
    update: Callable[[Batch, int], dict[str, Any]] | None = None
    run: Callable[[], dict[str, Any] | None] | None = None
    on_start: Callable[[], None] | None = None
    evaluate: bool = True
    batch_size: int | None = None
    #: Drop the incomplete last batch of each epoch (PyTorch's ``drop_last``), as some papers do.
    drop_last: bool = False
    select: bool = True
    optimizers: tuple[str, ...] | None = None
    epoch_indices: Callable[[int, torch.Generator], Tensor | None] | None = None
    on_epoch_start: Callable[[int], None] | None = None
    on_epoch_end: Callable[[int], None] | None = None
    predict: Callable[[Tensor], Tensor] | None = None
    #: A ``run`` phase that trains or needs gradients (a hand-written loop): no no_grad, no eval mode.
    grad: bool = False


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
    #: Averages gradients over processes before optimizer steps (the engine's; a no-op in one process).
    gradients: distributed.GradientAverager = field(default_factory=distributed.GradientAverager)
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
    #: Whether the method reads the validation split's group labels (DFR's balanced held-out set) but
    #: not the training data's; given only with --val-attr yes.
    uses_val_group_labels: ClassVar[bool] = False
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
        #: Optimizers some phase names (``Phase.optimizers``): not the default of the other phases.
        self._claimed: set[str] = set()
        self._optimizers: dict[str, torch.optim.Optimizer] = {}
        self._schedulers: dict[str, _Scheduled] = {}
        self._scaler_stepped = False

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
        """Called before each training epoch of the current phase (not again when a run resumes in
        the middle of an epoch: keep what it sets in buffers, which checkpoints hold)."""

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

    @property
    def classifier(self) -> Classifier | None:
        """The method's trained classifier: what other runs start from (``train.init_from``, ``--from``),
        what ``robust discover`` and ``robust rare spurious-score`` read, and what checkpoints keep under
        ``classifier``. A :class:`robust.models.Classifier` (``features`` + ``head``). Default: the
        attribute ``model``; a method whose classifier lives elsewhere overrides this property
        (None: the method has no single classifier to reuse)."""
        model = getattr(self, "model", None)
        return model if isinstance(model, nn.Module) else None

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
        self.ctx.gradients.attach(optimizer)
        if scheduler is not None:
            self._schedulers[name] = _Scheduled(scheduler, interval)
        return optimizer

    def remove_optimizer(self, name: str) -> None:
        """Forget an optimizer and its schedule (a phase that replaced the network it trained): it is no
        longer stepped nor checkpointed."""
        self._optimizers.pop(name, None)
        self._schedulers.pop(name, None)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def bind_phases(self, phases: list[Phase]) -> None:
        """Called by the engine with :meth:`phases`: which optimizers belong to one phase."""
        self._claimed = {name for phase in phases for name in (phase.optimizers or ())}

    def phase_optimizers(self) -> list[str]:
        """The optimizers of the current phase: those it names, else every one no phase names."""
        if self.phase is not None and self.phase.optimizers is not None:
            return [n for n in self.phase.optimizers if n in self._optimizers]
        return [n for n in self._optimizers if n not in self._claimed]

    def optimize(
        self,
        loss: Tensor,
        *optimizers: str,
        clip_grad_norm: float | None = None,
        retain_graph: bool = False,
    ) -> None:
        """zero_grad, backward (scaled under fp16), optional clipping, step: for the named optimizers
        (default: the current phase's, :meth:`phase_optimizers`)."""
        names = optimizers or self.phase_optimizers()
        chosen = [self._optimizers[n] for n in names]
        for opt in chosen:
            opt.zero_grad(set_to_none=True)
        scaler = self.ctx.precision.scaler
        (scaler.scale(loss) if scaler is not None else loss).backward(retain_graph=retain_graph)
        self.ctx.gradients.average(chosen)  # before clipping and the scaler's inf check
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

    def end_step(self) -> None:
        """Called by the engine after each ``update``: one grad-scaler update per iteration (fp16)."""
        if self._scaler_stepped and self.ctx.precision.scaler is not None:
            self.ctx.precision.scaler.update()
        self._scaler_stepped = False
        self.ctx.gradients.end_step()

    def step_schedulers(self, interval: Literal["step", "epoch"]) -> None:
        """Called by the engine after each step and each epoch: the schedules of the current phase's
        optimizers (a later phase's schedule does not advance during an earlier one)."""
        if not self._schedulers:  # called every step: nothing to do for a method without schedules (LfF)
            return
        active = set(self.phase_optimizers())
        for name, entry in self._schedulers.items():
            if entry.interval == interval and name in active:
                entry.scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        return {f"lr_{name}": opt.param_groups[0]["lr"] for name, opt in self._optimizers.items()}

    def training_state(self) -> dict[str, Any]:
        """Everything to checkpoint: modules and buffers, optimizers, schedulers, extra state."""
        classifier = self.classifier
        return {
            "modules": self.state_dict(),
            **({"classifier": classifier.state_dict()} if classifier is not None else {}),
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
