"""Membership inference on the spurious examples (``experiments/mem_inference.py``).

The data is split in two disjoint halves (the ``membership`` dataset transform,
``--set dataset.membership_half=target|shadow``): a *target* model trains on the target half of
the training set (with the planted examples), a *shadow* model, same recipe, on the shadow half.
The attack is the study's: for a point, the model's logits sorted in ascending order and one bit
"the prediction is correct", standardised, into a logistic regression (C by 3-fold grid search
over 0.01, 0.1, 1, 10) trained on the shadow model (its training half = members, its test half =
non-members). On the target model it is scored on the target training half (members) and test
half (non-members), and on the planted examples alone: how often they are flagged as members.
The reference's evaluation reuses the training logits for its non-member half; we use the test
half's, as the attack is meant.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from robust.api import ConfigError, DatasetBundle, subset_split


class MembershipOptions(BaseModel):
    """Options every dataset takes once robust-rare is installed."""

    model_config = ConfigDict(extra="forbid")

    membership_half: Literal["target", "shadow"] | None = Field(
        None, description="Keep one of two disjoint halves of the training and test splits (membership inference)."
    )
    membership_seed: int = Field(0, ge=0, description="Seed of the split into halves.")


def halves(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Two disjoint halves of ``range(n)``, sorted (the first is the target's)."""
    order = torch.from_numpy(np.random.RandomState(seed).permutation(n))
    return order[: n // 2].sort().values, order[n // 2 :].sort().values


def split_halves(bundle: DatasetBundle, options: MembershipOptions) -> DatasetBundle:
    """The bundle with only ``options.membership_half`` of its train and test splits."""
    if options.membership_half is None:
        return bundle
    which = 0 if options.membership_half == "target" else 1
    splits = dict(bundle.splits)
    for name in ("train", "test"):
        if name not in splits:
            raise ConfigError(f"Membership inference needs a {name} split; dataset {bundle.info.name!r} has none.")
        splits[name] = subset_split(splits[name], halves(len(splits[name]), options.membership_seed)[which])
    return dataclasses.replace(bundle, splits=splits)


def attack_features(logits: Tensor, labels: Tensor) -> np.ndarray:
    """Sorted logits (ascending) and the correctness bit, per point."""
    correct = (logits.argmax(dim=1) == labels).float().unsqueeze(1)
    return torch.cat([logits.sort(dim=1).values, correct], dim=1).cpu().numpy()


def fit_attack(member: np.ndarray, non_member: np.ndarray, seed: int = 0) -> Any:
    """The study's attack: standardise, logistic regression, C by 3-fold grid search."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([member, non_member])
    y = np.concatenate([np.ones(len(member)), np.zeros(len(non_member))])
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.01, 0.1, 1, 10]}, cv=3)
    return search.fit(x, y).best_estimator_


def evaluate_attack(attack: Any, member: np.ndarray, non_member: np.ndarray, spurious: np.ndarray) -> dict[str, float]:
    """Attack accuracy on members and non-members together, the share of members (and of the spurious
    members) flagged, and the mean membership probability the attack gives each."""
    predicted_in = attack.predict(member)
    predicted_out = attack.predict(non_member)
    correct = (predicted_in == 1).sum() + (predicted_out == 0).sum()
    result = {
        "attack_acc": float(correct / (len(member) + len(non_member))),
        "member_recall": float((predicted_in == 1).mean()),
        # The attack's membership probability: graded where nearly every member is flagged.
        "member_score": float(attack.predict_proba(member)[:, 1].mean()),
        "non_member_score": float(attack.predict_proba(non_member)[:, 1].mean()),
    }
    if len(spurious):
        result["spurious_member_recall"] = float((attack.predict(spurious) == 1).mean())
        result["spurious_member_score"] = float(attack.predict_proba(spurious)[:, 1].mean())
    return result
