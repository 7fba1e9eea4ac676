"""A compact port of JTT's released error set and upsampling (anniesch/jtt).

``process_training.py``: ``wrong_1_times = (y_pred != y_true)`` of the identification run's
``output_train_epoch_T.csv``. ``run_expt.py``: ``aug_indices = np.where(wrong_1_times == 1)``;
``ConcatDataset([train_data, Subset(train_data, list(aug_indices) * up_weight)])``, read by a
shuffling ``DataLoader`` (torch's ``RandomSampler``: one ``randperm`` of the concatenation per epoch).
"""

from __future__ import annotations

import numpy as np
import torch


def error_set(y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    wrong_1_times = (1.0 * (y_pred != y_true)).astype(np.int64)
    return np.where(wrong_1_times == 1)[0]


def epoch_order(num_train: int, aug_indices: np.ndarray, up_weight: int, generator: torch.Generator) -> list[int]:
    """The training indices an epoch of the upsampled ConcatDataset visits, in order."""
    concat = list(range(num_train)) + [int(i) for i in list(aug_indices) * up_weight]
    return [concat[j] for j in torch.randperm(len(concat), generator=generator).tolist()]
