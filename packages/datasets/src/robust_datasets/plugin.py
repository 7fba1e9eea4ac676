"""The entry point robust loads: registers the generated datasets by lazy reference.

Torch-free on purpose: ``robust list`` and ``robust --help`` load every plugin.
"""

from __future__ import annotations

from typing import Any

from robust import hookimpl


@hookimpl
def register_datasets(register: Any) -> None:
    register(
        "synthetic-cmnist",
        "robust_datasets.synthetic_cmnist:load",
        config="robust_datasets.synthetic_cmnist:SyntheticCMNISTConfig",
        description="Colored MNIST in the style of LfF, with procedurally drawn digits: colour predicts the "
        "digit for all but conflict_pct percent of training images; val/test colours are random.",
        default_model="mlp",
    )
    register(
        "synthetic-waterbirds",
        "robust_datasets.synthetic_waterbirds:load",
        config="robust_datasets.synthetic_waterbirds:SyntheticWaterbirdsConfig",
        description="Waterbirds-like: drawn landbird/waterbird shapes on land/water backgrounds with the real "
        "dataset's group counts (95% of training birds on their own habitat), with foreground masks and boxes.",
        default_model="cnn",
    )
