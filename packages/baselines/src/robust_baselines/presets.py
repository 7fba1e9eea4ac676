"""Settings per dataset.

| method | preset | source |
|---|---|---|
| jtt | waterbirds | the README's commands: SGD lr 1e-5, wd 1.0, batch 64 (generate_downstream.py), 300 epochs, T = 60, up_weight 100; ImageNet ResNet-50 |
| jtt | celeba | the README's commands: SGD lr 1e-5, wd 0.1, batch 64, 50 epochs, T = 1, up_weight 50 |
| dfr | waterbirds, celeba | the base model: the core's ERM presets; the C grids of dfr_evaluate_spurious.py (CelebA: its commented grid) |
| subg, rwg, suby, rwy, cvar_dro | waterbirds, celeba | the core's ERM presets (BalancingGroups and SubpopBench tune by random search: no fixed setting to copy); cvar_dro α 0.1 (SubpopBench's default) |
| all | synthetic-waterbirds, synthetic-cmnist | CPU-sized: Adam 1e-3, 8 epochs (JTT: T = 2, λ_up 5) |

The JTT presets keep the paper's λ_up with ``upweight_convention=paper`` (λ_up copies); the
released commands' ``--up_weight 100`` made 101 (README, decisions).
"""

from __future__ import annotations

from typing import Any

from robust.erm import ERM, RESNET50_IMAGENET
from robust_baselines.config import DFR_C_GRID_CELEBA

SYNTHETIC_DATASETS = {"synthetic-waterbirds": "synthetic", "synthetic-cmnist": "synthetic"}
SYNTHETIC = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}


def _jtt_sgd(lr: float, wd: float, epochs: int, t: int, lambda_up: int) -> dict[str, Any]:
    return {
        "method": {
            "optimizer": "sgd",
            "lr": lr,
            "momentum": 0.9,
            "weight_decay": wd,
            "identification_epochs": t,
            "lambda_up": lambda_up,
        },
        "train": {"batch_size": 64, "epochs": epochs},
        "model": dict(RESNET50_IMAGENET),
    }


JTT_PRESETS: dict[str, dict[str, Any]] = {
    "waterbirds": _jtt_sgd(1e-5, 1.0, 300, 60, 100),
    "celeba": _jtt_sgd(1e-5, 0.1, 50, 1, 50),
    "synthetic": {
        "method": {**SYNTHETIC, "identification_epochs": 2, "lambda_up": 5},
        "train": {"epochs": 8},
    },
}
JTT_DATASET_PRESETS = {"waterbirds": "waterbirds", "celeba": "celeba", **SYNTHETIC_DATASETS}

DFR_PRESETS: dict[str, dict[str, Any]] = {
    "waterbirds": ERM.presets["waterbirds"],
    "celeba": {**ERM.presets["celeba"], "method": {**ERM.presets["celeba"]["method"], "c_grid": DFR_C_GRID_CELEBA}},
    "synthetic": {"method": dict(SYNTHETIC), "train": {"epochs": 8}},
}
DFR_DATASET_PRESETS = {"waterbirds": "waterbirds", "celeba": "celeba", **SYNTHETIC_DATASETS}

REBALANCE_PRESETS: dict[str, dict[str, Any]] = {
    "waterbirds": ERM.presets["waterbirds"],
    "celeba": ERM.presets["celeba"],
    "synthetic": {"method": dict(SYNTHETIC), "train": {"epochs": 8}},
}
REBALANCE_DATASET_PRESETS = {"waterbirds": "waterbirds", "celeba": "celeba", **SYNTHETIC_DATASETS}

CVAR_PRESETS = REBALANCE_PRESETS
CVAR_DATASET_PRESETS = REBALANCE_DATASET_PRESETS
