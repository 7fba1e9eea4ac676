"""DFR, Deep Feature Reweighting (Kirichenko, Izmailov, Wilson, ICLR 2023; official code
PolinaKirichenko/deep_feature_reweighting): keep a trained model's features, refit its last layer
on a group-balanced held-out set. The main variant, DFR^Tr_Val: the features of a model trained on
the training split (Tr), the last layer fitted on the validation split (Val) by the official
protocol (:mod:`robust_baselines.dfr_protocol`).

Phases: ``erm`` (the base model; or ``load``, ``--from RUN_DIR``), not selectable; ``reweight``, one
step over the validation split that extracts the features (eval mode, unaugmented), tunes C, fits
the averaged logistic regression and writes it into the model's head (``dfr.json`` records the C
scores). The head then computes the logistic regression's decision function, so the engine's
evaluation is DFR's prediction. Reads the validation split's group labels (``--val-attr yes``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from robust.api import ERM, Batch, ConfigError, MethodContext, Phase, Split, atomic_write_json, trained_weights
from robust_baselines.config import DFRConfig
from robust_baselines.dfr_protocol import LastLayer, fit_last_layer, tune_c
from robust_baselines.presets import DFR_DATASET_PRESETS, DFR_PRESETS


def head_parameters(layer: LastLayer, num_classes: int) -> tuple[Tensor, Tensor]:
    """``(weight, bias)`` of a linear head on raw features equal to the logistic regression on
    standardised ones. Binary: logits (0, z), so that softmax gives sigmoid(z) and argmax its predict."""
    coef = layer.coef / layer.scale
    bias = layer.intercept - coef @ layer.mean
    if num_classes == 2 and coef.shape[0] == 1:
        coef = np.concatenate([np.zeros_like(coef), coef])
        bias = np.concatenate([np.zeros_like(bias), bias])
    return torch.as_tensor(coef, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32)


class DFR(ERM):
    """A base model's last layer replaced by DFR's group-balanced L1 logistic regression."""

    Config = DFRConfig
    config: DFRConfig
    #: DFR^Tr_Val balances its held-out half of val by val's group labels; it reads no training groups.
    uses_val_group_labels: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = DFR_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = DFR_DATASET_PRESETS

    def __init__(self, config: DFRConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.report: dict[str, Any] = {}

    def phases(self) -> list[Phase]:
        c = self.config
        start = (
            Phase("load", run=self.load_base_model)
            if c.from_run is not None
            else Phase("erm", epochs=c.base_epochs, select=False)
        )
        return [start, Phase("reweight", split="val", steps=1, update=self.reweight)]

    def load_base_model(self) -> None:
        c, ctx = self.config, self.ctx
        config, weights = trained_weights(c.from_run, c.from_checkpoint, map_location=ctx.device)
        theirs = (config.get("dataset", {}).get("name"), config.get("model", {}).get("name"))
        ours = (ctx.config.dataset_name, ctx.config.model_name)
        if theirs != ours:
            raise ConfigError(
                f"--from {c.from_run!r} trained model {theirs[1]!r} on dataset {theirs[0]!r}, but this DFR run "
                f"describes model {ours[1]!r} on {ours[0]!r}: the features must be the loaded model's. Pass "
                f"--dataset {theirs[0]} --model {theirs[1]} (and its --set model.* options), or drop --from."
            )
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as exc:
            raise ConfigError(
                f"The classifier of {c.from_run!r} does not fit this run's model: {str(exc).splitlines()[0]}. Use "
                "the same --set model.* and dataset.* options as that run."
            ) from None
        ctx.log(f"DFR base model: {c.from_run} ({c.from_checkpoint}).")

    @torch.no_grad()
    def features(self, split: str) -> np.ndarray:
        """Penultimate features of every sample of ``split``, in index order, eval mode, unaugmented."""
        was_training = self.model.training
        self.model.eval()
        rows: list[Tensor] = []
        index: list[Tensor] = []
        for batch in self.ctx.batches(split):
            rows.append(self.model.features(batch.x).float().cpu())
            index.append(batch.index.cpu())
        self.model.train(was_training)
        out = torch.empty(len(self.ctx.data.splits[split]), rows[0].shape[1])
        out[torch.cat(index)] = torch.cat(rows)
        return out.double().numpy()

    def require_every_group_and_class(self, val: Split) -> None:
        """The balanced refit needs samples of every group and class in val. The protocol counts groups
        up to the largest label it sees, so a missing last group would pass it; and a logistic regression
        that never saw the last class has fewer rows than the head (it would predict none of them)."""
        ctx = self.ctx
        missing_groups = sorted(set(range(ctx.info.group_count(val.groups))) - set(val.groups.unique().tolist()))
        missing_classes = sorted(set(range(ctx.num_classes)) - set(val.labels.unique().tolist()))
        if missing_groups or missing_classes:
            raise ConfigError(
                f"DFR refits the last layer on a group-balanced part of the validation split, and val of "
                f"{ctx.info.name!r} has no sample of group(s) {missing_groups or 'none'} and class(es) "
                f"{missing_classes or 'none'} ({len(val.labels)} samples). Use a validation split with several "
                "samples of every group and class (a larger val, or another split of the dataset)."
            )

    def reweight(self, batch: Batch, step: int) -> dict[str, float]:
        """The whole refit, once (the phase's single step; ``batch`` is not used)."""
        c, ctx = self.config, self.ctx
        val = ctx.data.splits["val"]
        if val.groups is None:
            raise ConfigError(
                "DFR^Tr_Val balances the validation split by group and picks C by its worst-group accuracy, and "
                f"this run has no val group labels (dataset {ctx.info.name!r} has none, or --val-attr no). Run it "
                "with --val-attr yes on a dataset with validation groups, or give inferred ones (robust discover, "
                "--set dataset.groups=FILE)."
            )
        self.require_every_group_and_class(val)
        x_train, x_val = self.features("train"), self.features("val")
        y_val, g_val = val.labels.cpu().numpy(), val.groups.cpu().numpy()
        rng = np.random.RandomState(c.dfr_seed)
        best, scores = tune_c(x_val, y_val, g_val, c.c_grid, rng, c.tune_retrains, c.preprocess)
        layer = fit_last_layer(x_train, x_val, y_val, g_val, best, rng, c.num_retrains, c.preprocess)
        weight, bias = head_parameters(layer, ctx.num_classes)
        with torch.no_grad():
            self.model.head.weight.copy_(weight.to(self.model.head.weight))
            self.model.head.bias.copy_(bias.to(self.model.head.bias))
        nonzero = int((np.abs(layer.coef) > 0).sum())
        self.report = {
            "c": best,
            "tune_worst_group_acc": {str(k): v / c.tune_retrains for k, v in scores.items()},
            "num_retrains": c.num_retrains,
            "nonzero_coefficients": nonzero,
        }
        atomic_write_json(ctx.run_dir / "dfr.json", self.report)
        ctx.log(
            f"DFR: C = {best} (tuned on half of val), {c.num_retrains} balanced refits averaged, {nonzero} nonzero."
        )
        return {"c": float(best), "tune_worst_group_acc": scores[best] / c.tune_retrains}
