"""The training engine: everything around a method's ``update`` step.

It resolves the device and precision, seeds, loads the dataset, builds the method, loops over
its phases, epochs and batches, evaluates on every eval split, records model selection under
every rule, checkpoints atomically (after each epoch, optionally every N steps), resumes, stops
on a non-finite loss, fires the lifecycle hooks and writes the run directory. Started by torchrun,
it trains data-parallel over the processes (:mod:`robust.distributed`); only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column
from rich.text import Text
from torch import Tensor

from robust import distributed
from robust.atomic import atomic_write
from robust.attributes import engine_view, method_view, resolve_protocol
from robust.checkpoint import load_training_checkpoint, save_checkpoint
from robust.data import Batch, DatasetBundle
from robust.datasets import load_entry
from robust.device import resolve_device, resolve_precision
from robust.errors import CheckpointError, ConfigError, NonFiniteLossError, RunDirError
from robust.loader import BatchLoader
from robust.method import Method, MethodContext, Phase
from robust.metrics import accuracy_metrics, macro_auc
from robust.models.classifier import build_registered_model
from robust.plugin_options import active_batch_transforms
from robust.plugins import plugin_distribution, pm
from robust.registry import get_registry
from robust.resolve import Resolved
from robust.results import RunDir
from robust.runlock import RunLock
from robust.seeding import generator, seed_everything
from robust.selection import Selector, default_rule, rule_label


def package_versions(*distributions: str) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for dist in ("robust-core", *distributions):
        try:
            versions[dist] = metadata.version(dist)
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return versions


class Run:
    """One training run: the method, its data and its run directory."""

    def __init__(
        self,
        resolved: Resolved,
        out: str | Path,
        *,
        resume: bool = False,
        quiet: bool = False,
        console: Console | None = None,
        rerun: str | None = None,
    ) -> None:
        self.resolved = resolved
        self.config = resolved.config
        self.train_config = self.config.train
        # Plugins' batch transforms the config switched on (input noise...): each is f(x, generator).
        self._batch_transforms = tuple(
            functools.partial(_apply_batch_transform, function, options)
            for _, function, options in active_batch_transforms(self.train_config)
        )
        self.run_dir = RunDir(out)
        self.resume = resume
        self.rerun = rerun
        self.device = distributed.setup(self.config.device) or resolve_device(self.config.device)
        self.world = distributed.world()
        self.is_main = self.world.is_main
        quiet = quiet or not self.is_main  # one process reports
        self.console = console if console is not None and self.is_main else Console(stderr=True, quiet=quiet)
        self.quiet = quiet
        # The other processes' method files (clusters, reports) go to a scratch directory: only rank 0
        # writes the run directory.
        self._scratch = None if self.is_main else Path(tempfile.mkdtemp(prefix=f"robust-rank{self.world.rank}-"))
        method_cls = resolved.method.load()
        self.method_cls = method_cls
        method_config = resolved.method_config  # validated once, by resolve_run_config
        if method_config is None:  # a Resolved built by hand
            method_options = {k: v for k, v in self.config.method.items() if k != "name"}
            method_config = (resolved.method.load_config() or method_cls.Config).model_validate(method_options)
        amp = self.train_config.amp
        if amp == "auto":  # a method may need full precision (double backprop under fp16 overflows)
            amp = method_cls.default_amp(method_config) or amp
        self.precision = resolve_precision(amp, self.device)
        seed_everything(self.config.seed, self.train_config.deterministic)
        # One process writes a run directory at a time: rank 0 holds its lock from here to the end of
        # fit() (or until set-up fails). Nothing in the directory changes before set-up has succeeded.
        self._lock: RunLock | None = None
        self._rerun_begun = False
        self._record: dict[str, Any] = {}
        created = False
        if self.is_main:
            self.run_dir.check(resume, rerun)
            created = not self.run_dir.path.exists()
            self._lock = RunLock(self.run_dir.path).acquire()
        self.console.print(self.start_line(), soft_wrap=True, markup=False, highlight=False)
        try:
            self._set_up(method_cls, method_config)
        except BaseException:
            self.release()
            if self.is_main and created and self.run_dir.is_empty():
                shutil.rmtree(self.run_dir.path, ignore_errors=True)  # leave no trace of a run that never began
            raise

    def _set_up(self, method_cls: type[Method], method_config: Any) -> None:
        resume, rerun = self.resume, self.rerun
        if self.is_main:
            self._start_again()
        distributed.barrier()  # the other processes read the directory once rank 0 has put it in order
        self.protocol = resolve_protocol(
            self.config.method_name,
            method_cls.uses_group_labels,
            self.config.train_attr,
            self.config.val_attr,
            method_cls.uses_val_group_labels,
        )
        with distributed.main_first():  # one process builds a dataset cache, the others read it
            self._all_data = self._load_data()
        self.data = engine_view(self._all_data, self.protocol)  # val groups only where the protocol keeps them
        self.info = self.data.info
        self.gradients = distributed.GradientAverager()
        self.method_context = self._context()
        self.method: Method = method_cls(method_config, self.method_context)
        if self.train_config.init_from and not resume:
            self._init_classifier(self.train_config.init_from)
        self.method.to(self.device)
        distributed.broadcast_module(self.method)
        self.method.train()
        self._train_loaders: dict[tuple[str, int], BatchLoader] = {}
        self._eval_loaders = {
            name: self._loader(name, self.train_config.eval_batch_size, expose_groups=True)
            for name in self.data.eval_split_names
        }
        self.history: list[dict[str, Any]] = []
        self.selector = Selector(test_metric=self.info.test_metric)
        self.state: dict[str, Any] = {
            "phase": 0,
            "started": False,
            "epoch": 0,
            "batch": 0,
            "phase_step": 0,
            "global_step": 0,
            "elapsed": 0.0,
        }
        self._resume_payload: dict[str, Any] | None = None
        self._rerun_payload: dict[str, Any] | None = None
        if rerun is not None:  # the phase exists and the state before it is readable, or nothing changes
            self._rerun_payload = self._rerun_start(self.method.phases())
        elif resume and self.run_dir.checkpoint_path.is_file():
            self._resume_payload = load_training_checkpoint(self.run_dir.checkpoint_path, map_location=self.device)
        elif resume:  # it died before its first checkpoint: nothing was trained that a restart would not redo
            self.log(f"{self.run_dir.path} has no checkpoint yet: starting it from the beginning.")
        self._record = self._config_record()
        if self.is_main:
            self.run_dir.claim(self._record, resume, rerun)
        distributed.barrier()

    def _start_again(self) -> None:
        """Under the lock, before anything is read: clear what a killed process left (temporary files,
        a rerun that never checkpointed), then check the directory again (another process may have
        finished or started a run there between the first check and the lock)."""
        removed = self.run_dir.remove_leftovers()
        if removed:
            self.log(f"Removed {len(removed)} temporary file(s) that an interrupted write left in {self.run_dir.path}.")
        note = self.run_dir.recover()
        if note and self.resume:
            raise RunDirError(
                f"{note} There is nothing to resume; run the same --rerun command again to rerun its phases."
            )
        if note:
            self.log(note)
        self.run_dir.check(self.resume, self.rerun)

    def release(self) -> None:
        """Let another process write the run directory (at the end of fit, or when set-up fails)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- setup --------------------------------------------------------------------------

    def _init_classifier(self, source: str) -> None:
        """``train.init_from``: the method's classifier starts from another run's (same model and classes)."""
        from robust.trained import trained_weights

        run_dir, _, checkpoint = source.rpartition(":") if ":" in Path(source).name else (source, "", "")
        _, weights = trained_weights(run_dir, checkpoint or "last", map_location="cpu")
        model = self.method.classifier
        if model is None:
            raise ConfigError(
                f"train.init_from needs a method with a classifier (Method.classifier); {self.config.method_name!r} "
                "has none."
            )
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            raise ConfigError(
                f"train.init_from={source!r}: its classifier does not fit this run's model ({str(exc).splitlines()[0]}). "
                "Use the same model, model options and number of classes."
            ) from None

    def _load_data(self) -> DatasetBundle:
        options = {k: v for k, v in self.config.dataset.items() if k != "name"}
        return load_entry(self.resolved.dataset, options, self.config.data_root)

    def _context(self) -> MethodContext:
        return MethodContext(
            config=self.config,
            info=self.data.info,
            data=method_view(self.data, self.protocol),
            device=self.device,
            precision=self.precision,
            run_dir=self._scratch or self.run_dir.path,
            build_model=self.build_model,
            build_loss=self.build_loss,
            batches=self.batches,
            log=self.log,
            group_agreement=self.group_agreement,
            gradients=self.gradients,
        )

    def build_model(self, name: str | None = None, **options: Any) -> torch.nn.Module:
        """The configured model (or another registered one), on the run's device."""
        registry = get_registry()
        if name is None or name == self.config.model_name:
            entry = self.resolved.model
            options = {**{k: v for k, v in self.config.model.items() if k != "name"}, **options}
        else:
            entry = registry.get("model", name)
        model = build_registered_model(entry, options, self.info.num_classes, self.info.input_shape)
        if self.train_config.sync_batchnorm and self.world.distributed:
            if self.device.type == "cpu":
                raise ConfigError(
                    "train.sync_batchnorm needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU. Drop "
                    "--set train.sync_batchnorm=true, or train on GPUs."
                )
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.train_config.channels_last and any(p.dim() == 4 for p in model.parameters()):
            model = self._channels_last(model, entry.name)
        return model.to(self.device)

    def _channels_last(self, model: torch.nn.Module, name: str) -> torch.nn.Module:
        """Channels-last convolutions, unless the model's forward needs NCHW-contiguous activations
        (a ``view`` of a convolution's output, common in hand-written models): one probe forward of
        two blank inputs in eval mode tells, and such a model keeps the default layout, with a note."""
        model.to(memory_format=torch.channels_last)
        training = model.training
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(2, *self.info.input_shape))
        except RuntimeError as error:
            if "view size is not compatible" not in str(error):
                raise
            self.log(
                f"Model {name!r} reshapes activations with .view, which channels-last convolutions break: it keeps "
                "the default layout (train.channels_last applies to the models that allow it; .reshape would)."
            )
            model.to(memory_format=torch.contiguous_format)
        finally:
            model.train(training)
        return model

    def build_loss(self, name: str, **options: Any):
        entry = get_registry().get("loss", name)
        config_cls = entry.load_config()
        return entry.load()(config_cls.model_validate(options) if config_cls is not None else None)

    def _loader(
        self,
        split: str,
        batch_size: int,
        *,
        expose_groups: bool,
        augmentation: str = "none",
        batch_transforms: tuple[Callable[[Tensor, torch.Generator], Tensor], ...] = (),
    ) -> BatchLoader:
        if split not in self.data.splits:
            raise ConfigError(
                f"Split {split!r} does not exist in dataset {self.info.name!r}; it has {', '.join(self.data.splits)}."
            )
        return BatchLoader(
            self.data.splits[split],
            self.info,
            self.device,
            batch_size=batch_size,
            augmentation=augmentation,
            expose_groups=expose_groups,
            data_on_device=self.train_config.data_on_device,
            num_workers=self.train_config.num_workers,
            batch_transforms=batch_transforms,
        )

    def batches(self, split: str = "train", *, batch_size: int | None = None) -> Iterator[Batch]:
        """Every sample of ``split`` in order, without augmentation (for feature extraction and analyses).

        Group and bias labels are included only when the protocol gives them to the method.
        """
        loader = self._loader(
            split, batch_size or self.train_config.eval_batch_size, expose_groups=self.protocol.gives(split)
        )
        return loader.batches(loader.sequential())

    def group_agreement(self, assignment: Tensor, split: str = "train") -> dict[str, float] | None:
        """How well ``assignment`` (one id per sample of ``split``: clusters, inferred groups) matches
        the true groups, without handing the groups to the method (None when the data has none)."""
        from robust.metrics import agreement

        groups = self._all_data.splits[split].groups
        return None if groups is None else agreement(assignment.cpu(), groups)

    def log(self, message: str) -> None:
        self.console.print(message)

    def _config_record(self) -> dict[str, Any]:
        record = self.config.model_dump(mode="json")
        plugins = {kind: getattr(self.resolved, kind).plugin for kind in ("method", "dataset", "model")}
        record["versions"] = package_versions(*{plugin_distribution(p) for p in plugins.values()})
        record["plugins"] = plugins
        return record

    # -- the loop -----------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Run every phase to the end and return the summary. The run directory stays locked until
        it returns; a rerun that fails before its first checkpoint gives the run it replaced back."""
        try:
            return self._fit()
        except BaseException:
            if self.is_main and self._rerun_begun and (note := self.run_dir.recover()):
                self.log(note)
            raise
        finally:
            self.release()

    def _fit(self) -> dict[str, Any]:
        phases = self.method.phases()
        self.method.bind_phases(phases)
        if self.rerun is not None:
            self._start_rerun(phases)
            if self.is_main:
                self.run_dir.begin_rerun(self._record)
                self._rerun_begun = True
        elif self._resume_payload is not None:
            self._restore(self._resume_payload, phases, self.run_dir.checkpoint_path)
        if self.is_main:  # lifecycle hooks (loggers) run in the process that writes
            pm.hook.on_run_start(run=self)
        started = time.perf_counter() - self.state["elapsed"]
        self._started_at = started
        with self._progress() as progress:
            self.progress = progress
            while self.state["phase"] < len(phases):
                phase = phases[self.state["phase"]]
                self.method.phase = phase
                if not self.state["started"]:
                    if phase.on_start is not None:
                        phase.on_start()
                        distributed.broadcast_module(self.method)  # modules the phase built
                    self.state["started"] = True
                if phase.run is not None:
                    self._run_phase(phase)
                else:
                    self._train_phase(phase)
                self.state.update(phase=self.state["phase"] + 1, started=False, epoch=0, batch=0, phase_step=0)
                self._checkpoint()
                if self.is_main:
                    finished = self.run_dir.phase_path(phase.name)
                    atomic_write(finished, lambda tmp: shutil.copyfile(self.run_dir.checkpoint_path, tmp))
        summary = self._summary(time.perf_counter() - started)
        if self.is_main:
            self.run_dir.write_summary(summary)
            self.run_dir.end_rerun()  # a rerun's predecessor, kept until now
            pm.hook.on_run_end(run=self, summary=summary)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        distributed.barrier()  # the summary exists before any process returns
        return summary

    def _run_phase(self, phase: Phase) -> None:
        """A non-training phase: ``run()`` once (under no_grad, in eval mode, unless ``grad=True``); a
        dict it returns goes to the history and to the summary's ``phase_results``."""
        was_training = self.method.training
        if not phase.grad:
            self.method.eval()
        try:
            with torch.no_grad() if not phase.grad else contextlib.nullcontext():
                result = phase.run()
        finally:
            self.method.train(was_training)
        if result is None:
            return
        if not isinstance(result, dict):
            raise TypeError(
                f"Phase {phase.name!r} returned a {type(result).__name__}; a run phase returns None or a dict."
            )
        results = _plain(result, phase.name)
        self.state.setdefault("phase_results", {})[phase.name] = results
        numbers = {
            f"{phase.name}/{key}": float(value)
            for key, value in results.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        self.history.append({"phase": phase.name, "epoch": 0, "step": self.state["global_step"], "metrics": numbers})
        if self.is_main:
            self.run_dir.write_history(self.history)

    def _phase_length(self, phase: Phase) -> tuple[int | None, int | None]:
        """(epochs, steps) of a training phase: exactly one is not None."""
        if phase.steps is not None:
            return None, phase.steps
        if phase.epochs is not None:
            return phase.epochs, None
        if self.train_config.steps is not None:
            return None, self.train_config.steps
        return self.train_config.epochs, None

    def _train_loader(self, phase: Phase) -> BatchLoader:
        batch_size = phase.batch_size or self.train_config.batch_size
        key = (phase.split, batch_size)
        if key not in self._train_loaders:
            augmentation = (self.train_config.augment or self.info.train_augment) if phase.split == "train" else "none"
            self._train_loaders[key] = self._loader(
                phase.split,
                batch_size,
                expose_groups=self.protocol.gives(phase.split),
                augmentation=augmentation,
                batch_transforms=self._batch_transforms,
            )
        return self._train_loaders[key]

    def _train_phase(self, phase: Phase) -> None:
        loader = self._train_loader(phase)
        update = phase.update or self.method.update
        epochs, steps = self._phase_length(phase)
        per_epoch = loader.num_batches(drop_singleton=True, drop_last=phase.drop_last, processes=self.world.size)
        total = steps if steps is not None else epochs * per_epoch
        task = self.progress.add_task(f"{phase.name}", total=total, completed=self.state["phase_step"], loss="")
        seed = self.config.seed
        while True:
            epoch = self.state["epoch"]
            if (steps is None and epoch >= epochs) or (steps is not None and self.state["phase_step"] >= steps):
                break
            resumed = self._resumed_epoch
            sums: dict[str, Tensor] = {}
            count = 0
            if resumed is not None:
                order, aug = resumed
                # The epoch's running loss sums go on from the checkpoint, so its train/ means cover every step.
                sums, count = self._resumed_sums or (sums, count)
                self._resumed_epoch = self._resumed_sums = None
            else:
                order_gen = generator(seed, "cpu", "order", phase.name, epoch)
                order = (phase.epoch_indices or self.method.epoch_indices)(epoch, order_gen)
                if order is None:
                    order = torch.randperm(len(loader), generator=order_gen)
                aug = generator(seed, self.device, "augment", phase.name, epoch, *self._rank_stream())
            if steps is None and len(order) != len(loader):  # resampled epochs: the bar counts their batches
                this_epoch = loader.num_batches(
                    len(order), drop_singleton=True, drop_last=phase.drop_last, processes=self.world.size
                )
                done = self.state["phase_step"] - self.state["batch"]
                self.progress.update(task, total=done + this_epoch * (epochs - epoch))
            if self.state["batch"] == 0:
                (phase.on_epoch_start or self.method.on_epoch_start)(epoch)
            per_sample = distributed.per_sample_buffers(self.method, len(loader)) if self.world.distributed else []
            for batch_index, batch in enumerate(
                loader.batches(
                    order,
                    start=self.state["batch"],
                    generator=aug,
                    drop_singleton=True,
                    drop_last=phase.drop_last,
                    world=self.world,
                ),
                start=self.state["batch"],
            ):
                if self.world.distributed:  # the weight of this process's gradients in the average
                    global_size = min(loader.batch_size, len(order) - batch_index * loader.batch_size)
                    self.gradients.batch_share = len(batch.y) / global_size
                with self.precision.autocast():
                    logs = update(batch, self.state["phase_step"])
                self.method.end_step()
                if per_sample:
                    distributed.share_rows(per_sample, batch.index)
                self.method.step_schedulers("step")
                self._accumulate(sums, logs)
                count += 1
                self.state["phase_step"] += 1
                self.state["global_step"] += 1
                self.state["batch"] = batch_index + 1
                phase_step = self.state["phase_step"]
                if phase_step % self.train_config.log_every == 0:
                    self._report(task, sums, count, phase)
                if steps is not None and phase_step >= steps:
                    break
                every = self.train_config.eval_every_steps
                if every and phase.evaluate and phase_step % every == 0:
                    self._evaluate(phase, self._train_means(self._check_finite(sums, count, phase)))
                ckpt_every = self.train_config.checkpoint_every_steps
                if ckpt_every and phase_step % ckpt_every == 0:
                    self._check_finite(sums, count, phase)
                    self._checkpoint(order=order, aug=aug, sums=sums, count=count)
            self._report(task, sums, count, phase)
            self.gradients.batch_share = 1.0 / self.world.size  # outside training steps every process does the same
            (phase.on_epoch_end or self.method.on_epoch_end)(epoch)
            self.method.step_schedulers("epoch")
            self.state["epoch"] = epoch + 1
            self.state["batch"] = 0
            finished = (steps is None and epoch + 1 >= epochs) or (
                steps is not None and self.state["phase_step"] >= steps
            )
            due = (epoch + 1) % self.train_config.eval_every == 0 and not self.train_config.eval_every_steps
            already = bool(self.history) and self.history[-1]["step"] == self.state["global_step"]
            if phase.evaluate and (due or finished) and not already:
                self._evaluate(phase, self._train_means(_means(sums, count)))
            # The end of the phase is checkpointed by fit(), once; with step checkpoints (resumable
            # mid-epoch), epoch ends are not checkpointed again.
            if not finished and not self.train_config.checkpoint_every_steps:
                self._checkpoint()
        self.progress.remove_task(task)

    def _rank_stream(self) -> tuple[object, ...]:
        """Each process draws its own augmentation (a single process keeps the stream it always had)."""
        return ("rank", self.world.rank) if self.world.distributed else ()

    def _train_means(self, means: dict[str, float]) -> dict[str, float]:
        """Training losses averaged over this epoch's steps (``means``: this process's), and over the processes."""
        if self.world.distributed and means:
            values = torch.tensor(list(means.values()), dtype=torch.float64, device=self.device)
            distributed.all_reduce_sum(values)
            means = dict(zip(means, (values / self.world.size).tolist(), strict=True))
        return means

    def _accumulate(self, sums: dict[str, Tensor], logs: dict[str, Tensor | float]) -> None:
        """Add a step's logged losses to the epoch's float32 sums on the device, with no host
        synchronisation: one fused in-place add for every key already summed (one kernel on a GPU,
        not one per loss); a new key starts from a copy of its value."""
        known, values = [], []
        for key, value in logs.items():
            if (
                not isinstance(value, Tensor)
                or value.dtype != torch.float32
                or value.device != self.device
                or value.dim()
            ):
                value = torch.as_tensor(value, device=self.device).float().reshape(())  # one number per key
            total = sums.get(key)
            if total is None:
                sums[key] = value.detach().clone()
            else:
                known.append(total)
                values.append(value.detach() if value.requires_grad else value)
        if known:
            torch._foreach_add_(known, values)

    def _report(self, task: Any, sums: dict[str, Tensor], count: int, phase: Phase) -> None:
        """Every ``log_every`` steps and at each epoch's end: stop on a non-finite loss and show the
        running means, both from one copy of the sums to the host (the loop's only one between evaluations)."""
        means = self._check_finite(sums, count, phase)
        if not self.progress.disable:  # nothing to show in a quiet run or without a terminal
            self.progress.update(task, completed=self.state["phase_step"], loss=_format_means(means))

    def _check_finite(self, sums: dict[str, Tensor], count: int, phase: Phase) -> dict[str, float]:
        """Raise NonFiniteLossError if a logged loss became NaN or inf; else return the running means."""
        means = _means(sums, count)
        finite = [math.isfinite(value) for value in means.values()]
        if self.world.distributed and finite:  # all processes stop together, naming the same losses
            flags = torch.tensor([float(f) for f in finite], device=self.device)
            finite = [bool(f) for f in (distributed.all_reduce_sum(flags) == self.world.size)]
        bad = [key for key, ok in zip(sums, finite, strict=True) if not ok]
        if bad:
            last = self.run_dir.checkpoint_path
            kept = (
                f"The last good checkpoint is kept at {str(last)!r}"
                if last.exists()
                else "No checkpoint was written yet"
            )
            raise NonFiniteLossError(
                f"Training stopped: {', '.join(bad)} became non-finite (NaN or inf) in phase {phase.name!r}, "
                f"epoch {self.state['epoch']}, around step {self.state['phase_step']}. {kept}. Lower the learning "
                "rate, enable gradient clipping, or turn off fp16 (--set train.amp=off), then start again (or "
                "resume with --resume after changing the config file)."
            )
        return means

    # -- evaluation and selection ---------------------------------------------------------

    @torch.no_grad()
    def predictions(self, split: str, scores: bool = False) -> tuple[Tensor, float, Tensor | None]:
        """Predicted classes for every sample of an eval split, the mean cross-entropy, and (when
        ``scores``) the softmax probabilities."""
        loader = self._eval_loaders[split]
        was_training = self.method.training
        self.method.eval()
        preds, probs = [], []
        loss = torch.zeros((), device=self.device)
        order = distributed.shard(loader.sequential(), self.world)  # each process predicts its share
        phase = self.method.phase
        predict = (phase.predict if phase is not None else None) or self.method.predict
        for batch in loader.batches(order):
            with self.precision.autocast():
                logits = predict(batch.x)
            preds.append(logits.argmax(dim=1))
            loss += F.cross_entropy(logits.float(), batch.y, reduction="sum")
            if scores:
                probs.append(logits.float().softmax(dim=1))
        self.method.train(was_training)
        if len(loader) == 0:
            return torch.empty(0, dtype=torch.long, device=self.device), math.nan, None
        num_classes = self.info.num_classes
        pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=self.device)
        prob = torch.cat(probs) if probs else torch.empty(0, num_classes, device=self.device)
        if self.world.distributed:  # shares are contiguous and in rank order: gathering restores the split
            pred = distributed.gather_rows(pred)
            prob = distributed.gather_rows(prob) if scores else prob
            distributed.all_reduce_sum(loss)
        return pred, loss.item() / len(loader), prob if scores else None

    def evaluate_splits(self) -> dict[str, float]:
        self._sync_buffers()
        metrics: dict[str, float] = {}
        inferred = self.info.extra.get("inferred_groups", {}).get("splits", [])
        for name, loader in self._eval_loaders.items():
            preds, loss, probs = self.predictions(name, scores=self.info.auc)
            metrics[f"{name}/loss"] = loss
            if probs is not None and (auc := macro_auc(probs, loader.labels)) is not None:
                metrics[f"{name}/macro_auc"] = auc
            split_metrics = accuracy_metrics(
                preds,
                loader.labels,
                loader.groups,
                loader.bias,
                num_classes=self.info.num_classes,
                num_groups=self.info.group_count(loader.groups, name),
                train_group_counts=None if name in inferred else self.info.train_group_counts or None,
            )
            metrics.update({f"{name}/{key}": value for key, value in split_metrics.items()})
        for name, terms in self.info.derived_metrics.items():
            if terms and all(t in metrics for t in terms):
                metrics[name] = metrics[terms[0]] - sum(metrics[t] for t in terms[1:])
        return metrics

    def _evaluate(self, phase: Phase, train_logs: dict[str, float]) -> dict[str, Any]:
        metrics = self.evaluate_splits()
        metrics.update({f"train/{key}": value for key, value in train_logs.items()})
        metrics.update({f"train/{key}": value for key, value in self.method.learning_rates().items()})
        record = {
            "phase": phase.name,
            "epoch": self.state["epoch"],
            "step": self.state["global_step"],
            "metrics": metrics,
        }
        self.history.append(record)
        if self.is_main:
            self.run_dir.write_history(self.history)
        improved = self.selector.update(record) if phase.select else []
        self.method.on_evaluation(record)
        if self.train_config.keep_best and improved and self.is_main:
            first = self.run_dir.best_path(improved[0])
            classifier = self.method.classifier
            kept = {"modules": self.method.state_dict(), "record": record}
            if classifier is not None:
                kept["classifier"] = classifier.state_dict()
            save_checkpoint(first, kept)
            for rule in improved[1:]:  # the same weights: copy the file rather than serialise again
                atomic_write(self.run_dir.best_path(rule), lambda tmp: shutil.copyfile(first, tmp))
        if self.is_main:
            pm.hook.on_evaluation(run=self, record=record)
        return record

    # -- checkpoints ----------------------------------------------------------------------

    def _sync_buffers(self) -> None:
        """Every process holds the same buffers before it evaluates or saves (BatchNorm statistics
        averaged over processes; per-sample tables are already shared row by row)."""
        if self.world.distributed:
            split = self.data.splits.get(getattr(self.method.phase, "split", "train"), self.data.splits["train"])
            per_sample = distributed.per_sample_buffers(self.method, len(split))
            distributed.average_buffers(self.method, skip=per_sample)

    def _checkpoint(
        self,
        order: Tensor | None = None,
        aug: torch.Generator | None = None,
        sums: dict[str, Tensor] | None = None,
        count: int = 0,
    ) -> None:
        self._sync_buffers()
        mid_epoch = aug is not None and bool(self.state["batch"])
        aug_state = aug.get_state() if mid_epoch else None
        # The running sums of the epoch's logged losses (float32, as accumulated), one row per process.
        sum_values = torch.stack(list(sums.values())).unsqueeze(0) if mid_epoch and sums else None
        if mid_epoch and self.world.distributed:  # every process's augmentation stream, row = rank
            aug_state = distributed.gather_rows(aug_state.to(self.device).unsqueeze(0)).cpu()
            if sum_values is not None:
                sum_values = distributed.gather_rows(sum_values)
        if not self.is_main:
            return
        engine = dict(self.state)
        engine["elapsed"] = time.perf_counter() - self._started_at
        engine["order"] = order.cpu() if order is not None and self.state["batch"] else None
        engine["aug_state"] = aug_state
        saved_sums = {"keys": list(sums), "values": sum_values.cpu(), "count": count} if sums else None
        engine["epoch_sums"] = saved_sums if sum_values is not None else None
        engine["world_size"] = self.world.size
        engine["history"] = self.history
        engine["selector"] = self.selector.state()
        engine["rng_cpu"] = torch.get_rng_state()
        engine["rng_cuda"] = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []
        payload = {"engine": engine, "method": self.method.training_state()}
        if self.precision.scaler is not None:
            payload["scaler"] = self.precision.scaler.state_dict()
        save_checkpoint(self.run_dir.checkpoint_path, payload)

    _resumed_epoch: tuple[Tensor, torch.Generator] | None = None
    _resumed_sums: tuple[dict[str, Tensor], int] | None = None

    def _restored_sums(self, engine: dict[str, Any]) -> tuple[dict[str, Tensor], int] | None:
        """The interrupted epoch's loss sums and step count (this process's row). Checkpoints written
        before they were saved have none: that epoch's train/ means then cover the steps after the resume."""
        saved = engine.get("epoch_sums")
        if not saved:
            return None
        values = saved["values"]
        if values.shape[0] != self.world.size:  # another number of processes: the sums do not split again
            return None
        row = values[self.world.rank].to(self.device)
        return {key: row[i] for i, key in enumerate(saved["keys"])}, int(saved["count"])

    def _rerun_start(self, phases: list[Phase]) -> dict[str, Any] | None:
        """The state phase ``self.rerun`` starts from: the checkpoint saved when the phase before it
        ended (None for the first phase). Raises before anything in the run directory changes."""
        names = [p.name for p in phases]
        if self.rerun not in names:
            raise ConfigError(
                f"Method {self.config.method_name!r} has no phase {self.rerun!r}; its phases are {', '.join(names)}. "
                "Pass one of them to --rerun. Nothing in the run directory was changed."
            )
        index = names.index(self.rerun)
        if index == 0:
            return None
        before = self.run_dir.phase_path(names[index - 1])
        if not before.is_file():
            raise RunDirError(
                f"Cannot rerun phase {self.rerun!r} of {str(self.run_dir.path)!r}: the phase before it "
                f"({names[index - 1]!r}) has not finished there (no {before.name}). Resume the run with --resume "
                "first, or rerun an earlier phase."
            )
        return load_training_checkpoint(before, map_location=self.device)

    def _start_rerun(self, phases: list[Phase]) -> None:
        """Go back to the start of phase ``self.rerun`` (validated by :meth:`_rerun_start`). Model
        selection restarts with the rerun."""
        names = [p.name for p in phases]
        index = names.index(self.rerun)
        if self._rerun_payload is None:
            self.log(f"Rerunning {self.run_dir.path} from its first phase {self.rerun!r}.")
            return
        self._restore(self._rerun_payload, phases, self.run_dir.phase_path(names[index - 1]))
        self.selector = Selector(test_metric=self.info.test_metric)
        self.log(f"Rerunning phase {self.rerun!r} and those after it, from the end of {names[index - 1]!r}.")

    def _restore(self, payload: dict[str, Any], phases: list[Phase], path: Path) -> None:
        engine = payload["engine"]
        # Replay the set-up of every phase reached, so modules and optimizers exist before loading.
        for index in range(min(engine["phase"], len(phases))):
            if phases[index].on_start is not None:
                phases[index].on_start()
        if engine["started"] and engine["phase"] < len(phases) and phases[engine["phase"]].on_start is not None:
            phases[engine["phase"]].on_start()
        try:
            self.method.load_training_state(payload["method"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"Checkpoint {str(path)!r} does not fit this run's {self.config.method_name!r} method and "
                f"{self.config.model_name!r} model ({first}): it was written by another method, model or "
                "options. Resume with the options in the run's config.json, or start again in a new --out "
                "directory."
            ) from None
        if "scaler" in payload and self.precision.scaler is not None:
            self.precision.scaler.load_state_dict(payload["scaler"])
        self.history = list(engine["history"])
        self.selector = Selector(engine["selector"], test_metric=self.info.test_metric)
        for key in ("phase", "started", "epoch", "batch", "phase_step", "global_step", "elapsed"):
            self.state[key] = engine[key]
        self.state["phase_results"] = dict(engine.get("phase_results", {}))
        torch.set_rng_state(engine["rng_cpu"].cpu())
        if self.device.type == "cuda" and engine["rng_cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in engine["rng_cuda"]])
        if engine["batch"] and engine["order"] is not None:
            aug = torch.Generator(device=self.device)
            state = engine["aug_state"].cpu()
            if state.dim() == 2:  # saved by several processes: this one's row
                if state.shape[0] != self.world.size:
                    self.log(
                        f"The checkpoint was written by {state.shape[0]} processes and this run has "
                        f"{self.world.size}: the rest of the interrupted epoch draws new augmentations."
                    )
                state = state[min(self.world.rank, state.shape[0] - 1)]
            aug.set_state(state)
            self._resumed_epoch = (engine["order"], aug)
            self._resumed_sums = self._restored_sums(engine)
        distributed.broadcast_module(self.method)
        self.log(
            f"Resuming {self.run_dir.path} at phase {engine['phase']}, epoch {engine['epoch']}, step {engine['global_step']}."
        )

    # -- reporting ------------------------------------------------------------------------

    def _summary(self, elapsed: float) -> dict[str, Any]:
        eval_prefixes = tuple(f"{name}/" for name in self.data.eval_split_names)
        selection = {}
        for rule, record in self.selector.best.items():
            selection[rule] = {
                "label": rule_label(rule, self.info.test_metric),
                "phase": record["phase"],
                "epoch": record["epoch"],
                "step": record["step"],
                "metrics": {k: v for k, v in record["metrics"].items() if k.startswith(eval_prefixes)},
            }
        val = self.data.splits["val"]
        # A selectable phase that trains on the validation split (PruSC's retraining): val-based
        # rules then pick by training data, so the rule shown first is the last evaluation.
        val_trained = any(p.select and p.run is None and p.split == "val" for p in self.method.phases())
        default = "last" if val_trained and "last" in selection else default_rule(list(selection))
        return {
            "method": self.config.method_name,
            "dataset": self.config.dataset_name,
            "model": self.config.model_name,
            "seed": self.config.seed,
            "preset": self.config.preset,
            "protocol": {
                **self.protocol.record(val_groups_known=val.groups is not None),
                "inferred_groups": self.info.extra.get("inferred_groups"),
                "val_used_for_training": val_trained,
            },
            "opt_outs": self.method_context.opt_outs,
            "phase_results": self.state.get("phase_results", {}),
            "default_selection": default,
            "selection": selection,
            "train": {
                "steps": self.state["global_step"],
                "wall_time_s": round(elapsed, 3),
                "device": str(self.device),
                "precision": self.precision.name,
                "processes": self.world.size,
            },
        }

    def start_line(self) -> str:
        """One line when a run starts: method, dataset, preset, model, length, device, run directory."""
        config, train = self.config, self.train_config
        if train.steps is not None:
            length = f"{train.steps} step{'s' if train.steps != 1 else ''}"
        else:
            length = f"{train.epochs} epoch{'s' if train.epochs != 1 else ''}"
        verb = "Resuming" if self.resume else f"Rerunning from phase {self.rerun!r}" if self.rerun else "Training"
        precision = self.precision.name if self.precision.enabled else "fp32"
        processes = f" x {self.world.size} processes" if self.world.distributed else ""
        return (
            f"{verb} {config.method_name} on {config.dataset_name}: preset {config.preset or 'none'}, model "
            f"{config.model_name}, {length}, device {self.device} ({precision}{processes}), "
            f"run directory {self.run_dir.path}"
        )

    def _progress(self) -> Progress:
        """One line per phase that always shows the bar, the step count and the time left (a fixed-width
        name, a 24-character bar), and the phase's running losses on the line below it, cut to the
        terminal's width."""
        return _MetricsBelowProgress(
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, max_width=16)),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=self.quiet or not self.console.is_terminal,
        )


class _MetricsBelowProgress(Progress):
    """rich's Progress with each task's ``loss`` field (its running losses) on a line of its own, below the
    bars: however many losses a method logs, the bar, the count and the ETA stay on screen."""

    def get_renderables(self) -> Iterator[Any]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            text = task.fields.get("loss") if task.visible else None
            if text:
                yield Text(f"  {text}", style="dim", no_wrap=True, overflow="ellipsis")


def _means(sums: dict[str, Tensor], count: int) -> dict[str, float]:
    """The sums divided by ``count``, read to the host in one copy (not one synchronisation per loss)."""
    values = torch.stack([value.reshape(()) for value in sums.values()]).tolist() if sums else []
    return {key: value / max(count, 1) for key, value in zip(sums, values, strict=True)}


def _format_logs(sums: dict[str, Tensor], count: int) -> str:
    return _format_means(_means(sums, count))


def _format_means(means: dict[str, float]) -> str:
    """The running means of the logged losses, compact (``loss=0.693 ce=0.689``), for the progress display."""
    return " ".join(f"{key}={value:.3g}" for key, value in means.items() if math.isfinite(value))


def _apply_batch_transform(
    function: Callable[..., Tensor], options: Any, x: Tensor, generator: torch.Generator
) -> Tensor:
    return function(x, generator, options)


def _plain(value: Any, phase: str) -> Any:
    """What a ``run`` phase returned, as JSON (tensors become numbers or lists); anything else that JSON
    cannot hold is a clear error naming the phase."""

    def tensor(obj: Any) -> Any:
        if isinstance(obj, Tensor):
            return obj.detach().cpu().tolist()
        raise TypeError(
            f"Phase {phase!r} returned a {type(obj).__name__} inside its result; a run phase returns None or a "
            "dict of numbers, strings, lists and tensors (recorded in history.h5 and summary.json)."
        )

    return json.loads(json.dumps(value, default=tensor))
