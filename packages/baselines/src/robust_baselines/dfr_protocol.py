"""DFR^Tr_Val's last-layer protocol on extracted features (numpy in, numpy out; no torch).

Ported from PolinaKirichenko/deep_feature_reweighting ``dfr_evaluate_spurious.py``
(``dfr_on_validation_tune`` and ``dfr_on_validation_eval`` with ``balance_val=True``,
``add_train=False``, the script's defaults), with its global ``np.random`` replaced by a
``RandomState`` handed in (the same draws, in the same order):

* tune: val shuffled and halved; the second half subsampled to the smallest group's size in every
  group, standardised on itself; for each C, ``LogisticRegression(penalty="l1", C, liblinear)``
  fitted there and scored by worst-group accuracy on the first half (summed over ``tune_retrains``);
  the best C kept (the first on ties, as ``np.argmax``);
* fit: ``num_retrains`` times, the whole val subsampled to the smallest group's size per group,
  standardised with the scaler fitted on the *training* features, a logistic regression with the
  best C; their coefficients and intercepts averaged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from robust.api import ConfigError


def balanced_subset(groups: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Indices of ``groups`` with every group cut to the smallest one's size, each group's samples
    shuffled first (one shuffle per group, in group order). Group-major order, as the reference."""
    by_group = [np.where(groups == g)[0] for g in range(int(np.max(groups)) + 1)]
    smallest = min(len(g) for g in by_group)
    if smallest == 0:  # the reference would fit on nothing and fail inside scikit-learn
        empty = [g for g, members in enumerate(by_group) if len(members) == 0]
        raise ConfigError(
            f"DFR balances its validation features by group, and group(s) {empty} have no sample in the part of "
            f"val being balanced ({len(groups)} samples: the whole split, or the random half that C is fitted "
            "on). A group-balanced set would be empty. Use a validation split with several samples of every "
            "group (DFR needs --val-attr yes on a dataset whose val has all groups)."
        )
    for g in by_group:
        rng.shuffle(g)
    return np.concatenate([g[:smallest] for g in by_group])


def logistic_regression(c: float, x: np.ndarray, y: np.ndarray, rng: np.random.RandomState) -> LogisticRegression:
    """The official L1 logistic regression fitted on ``(x, y)``. liblinear draws its seed from
    ``random_state``; the reference leaves it None, i.e. the global ``np.random``, the stream its
    shuffles use, so ``rng`` is handed in to keep every later draw the reference's."""
    model = LogisticRegression(penalty="l1", C=c, solver="liblinear", class_weight={0: 1.0, 1: 1.0}, random_state=rng)
    with warnings.catch_warnings():  # scikit-learn >= 1.8 deprecates `penalty` (l1_ratio=1 is the same model)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="Inconsistent values: penalty=l1")
        return model.fit(x, y)


def worst_group_accuracy(pred: np.ndarray, y: np.ndarray, groups: np.ndarray, num_groups: int) -> float:
    return float(np.min([(pred == y)[groups == g].mean() for g in range(num_groups)]))


def tune_c(
    x_val: np.ndarray,
    y_val: np.ndarray,
    g_val: np.ndarray,
    c_grid: list[float],
    rng: np.random.RandomState,
    retrains: int = 1,
    preprocess: bool = True,
) -> tuple[float, dict[float, float]]:
    """The C of ``c_grid`` with the best worst-group accuracy on held-out halves of val, and every score."""
    scores: dict[float, float] = {}
    for _ in range(retrains):
        half = len(x_val) // 2
        idx = np.arange(len(x_val))
        rng.shuffle(idx)
        fit_x, fit_y, fit_g = x_val[idx[half:]], y_val[idx[half:]], g_val[idx[half:]]
        keep = balanced_subset(fit_g, rng)
        fit_x, fit_y = fit_x[keep], fit_y[keep]
        eval_x, eval_y, eval_g = x_val[idx[:half]], y_val[idx[:half]], g_val[idx[:half]]
        num_groups = int(np.max(g_val)) + 1
        if preprocess:
            scaler = StandardScaler()
            fit_x = scaler.fit_transform(fit_x)
            eval_x = scaler.transform(eval_x)
        for c in c_grid:
            model = logistic_regression(c, fit_x, fit_y, rng)
            score = worst_group_accuracy(model.predict(eval_x), eval_y, eval_g, num_groups)
            scores[c] = scores.get(c, 0.0) + score
    best = list(scores)[int(np.argmax(list(scores.values())))]
    return best, scores


@dataclass
class LastLayer:
    """The averaged logistic regression on standardised features: logits_k = coef_k · (x − mean)/scale + b_k."""

    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


def fit_last_layer(
    x_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    g_val: np.ndarray,
    c: float,
    rng: np.random.RandomState,
    retrains: int = 20,
    preprocess: bool = True,
) -> LastLayer:
    """``retrains`` logistic regressions on group-balanced resamples of val, averaged."""
    dim = x_train.shape[1]
    mean, scale = np.zeros(dim), np.ones(dim)
    if preprocess:
        scaler = StandardScaler().fit(x_train)
        mean, scale = scaler.mean_, scaler.scale_
    coefs, intercepts = [], []
    for _ in range(retrains):
        keep = balanced_subset(g_val, rng)
        rng.shuffle(np.arange(len(x_train)))  # the reference draws (and drops) a training subset here
        model = logistic_regression(c, (x_val[keep] - mean) / scale, y_val[keep], rng)
        coefs.append(model.coef_)
        intercepts.append(model.intercept_)
    return LastLayer(np.mean(coefs, axis=0), np.mean(intercepts, axis=0), mean, scale)
