"""Clustering a trained model's representations: pseudo groups where nobody annotated the
spurious attribute.

An ERM model's penultimate features cluster by (class, spurious attribute), so cluster ids can
stand in for unknown group labels (PruSC, IRM with annotation-free environments, group discovery).
One implementation for all of them:

* :func:`representations`: penultimate features of every sample of a split (eval mode, no
  augmentation);
* :func:`kmeans`: k-means with cosine distance (spherical k-means: unit vectors, centroids
  renormalised), k-means++ seeding from a seeded generator, so a clustering is reproducible;
* :func:`cluster`: all classes together (PruSC's official code) or per class;
* ``robust.api.agreement`` (in the core's metrics): how well clusters match true groups where those
  are known (adjusted Rand index, purity, worst-group recall);
* :func:`write_assignment` / :func:`read_assignment`: the CSV a user can inspect, reuse, or
  supply by hand (``index,label,cluster[,group]``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.api import Batch, ConfigError, atomic_write

Mode = Literal["all", "per_class"]


@torch.no_grad()
def representations(model: torch.nn.Module, batches: Iterable[Batch]) -> tuple[Tensor, Tensor, Tensor]:
    """``(features, labels, index)`` of every batch: ``model.features(x)`` in eval mode (the
    classifier contract: features then head), restored to its previous mode afterwards."""
    was_training = model.training
    model.eval()
    feats, labels, index = [], [], []
    try:
        for batch in batches:
            feats.append(model.features(batch.x).float().flatten(1))
            labels.append(batch.y)
            index.append(batch.index)
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels), torch.cat(index)


def kmeans(
    features: Tensor,
    k: int,
    *,
    seed: int = 0,
    restarts: int = 1,
    iterations: int = 100,
    tolerance: float = 1e-6,
) -> Tensor:
    """Cluster ids (0..k-1) of ``features`` (N × D) by k-means with cosine distance.

    Points are normalised to unit length; each iteration assigns a point to the centroid of largest
    cosine similarity and moves each centroid to the renormalised mean of its points. A cluster that
    empties is re-seeded with the point farthest from its centroid. Stops when no centroid moves by
    more than ``tolerance`` (cosine), or after ``iterations``. With ``restarts`` > 1, k-means runs
    from that many seedings and keeps the tightest result (largest total cosine similarity to the
    centroids), as scikit-learn's ``n_init``: one unlucky seeding can merge two clear clusters.
    """
    n = len(features)
    if k < 1:
        raise ConfigError(f"The number of clusters must be at least 1, not {k}.")
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=features.device)
    k = min(k, n)
    x = F.normalize(features.float(), dim=1)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    best, best_fit = None, -math.inf
    for _ in range(max(1, restarts)):
        assign, fit = _lloyd(x, _kmeans_plus_plus(x, k, gen), iterations, tolerance)
        if fit > best_fit:
            best, best_fit = assign, fit
    assert best is not None
    return best


def _lloyd(x: Tensor, centroids: Tensor, iterations: int, tolerance: float) -> tuple[Tensor, float]:
    """Lloyd iterations from ``centroids``: (assignment, total cosine similarity to the centroids)."""
    k = len(centroids)
    n = len(x)
    assign = torch.zeros(n, dtype=torch.long, device=x.device)
    for _ in range(iterations):
        similarity = x @ centroids.T
        assign = similarity.argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        if empty.any():  # re-seed empty clusters with the worst-fitted points
            worst = similarity.max(dim=1).values.argsort()[: int(empty.sum())]
            sums[empty] = x[worst]
        updated = F.normalize(sums, dim=1)
        shift = (1 - (updated * centroids).sum(dim=1)).max()
        centroids = updated
        if shift <= tolerance:
            break
    best = (x @ centroids.T).max(dim=1)
    return best.indices, float(best.values.sum())


def _kmeans_plus_plus(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding with the cosine distance ``1 - cos``."""
    n = len(x)
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = [first]
    distance = (1 - x @ x[first]).clamp_min(0)
    for _ in range(1, k):
        weights = distance.cpu().double()
        if float(weights.sum()) <= 0:  # fewer distinct points than k: take any unchosen one
            pick = next(i for i in range(n) if i not in chosen)
        else:
            pick = int(torch.multinomial(weights, 1, generator=gen))
        chosen.append(pick)
        distance = torch.minimum(distance, (1 - x @ x[pick]).clamp_min(0))
    return x[chosen].clone()


def cluster(
    features: Tensor, labels: Tensor, k: int, *, mode: Mode = "all", seed: int = 0, restarts: int = 1
) -> Tensor:
    """Cluster ids: ``all`` classes together into ``k`` clusters, or ``per_class`` (``k`` clusters
    within each class; ids ``class * k + j``, so a cluster never mixes classes)."""
    if mode == "all":
        return kmeans(features, k, seed=seed, restarts=restarts)
    if mode != "per_class":
        raise ConfigError(f"Clustering mode must be 'all' or 'per_class', not {mode!r}.")
    out = torch.empty(len(labels), dtype=torch.long, device=features.device)
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        out[members] = c * k + kmeans(features[members], k, seed=seed + c, restarts=restarts)
    return out


FIELDS = ("index", "label", "cluster")


def write_assignment(
    path: str | Path, index: Tensor, labels: Tensor, clusters: Tensor, groups: Tensor | None = None
) -> None:
    """The cluster of every sample as CSV (``index,label,cluster`` and ``group`` when known), atomically."""
    order = index.cpu().argsort()
    columns = [index.cpu()[order], labels.cpu()[order], clusters.cpu()[order]]
    header = list(FIELDS)
    if groups is not None:
        columns.append(groups.cpu()[order])
        header.append("group")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*(col.tolist() for col in columns), strict=True))
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_assignment(path: str | Path, num_samples: int, labels: Tensor | None = None) -> Tensor:
    """The cluster id of samples ``0..num_samples-1`` from a CSV with ``index`` and ``cluster``
    columns (``label`` is checked against ``labels`` when both are there)."""
    path = Path(path)
    expect = (
        f"a CSV with a header and one row per training sample: index (0..{num_samples - 1}), label, cluster "
        "(an integer id), as `robust run prusc` writes to clusters.csv"
    )
    if not path.is_file():
        raise ConfigError(f"No cluster assignment at {str(path)!r}: expected {expect}.")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"index", "cluster"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{str(path)!r} has no {' or '.join(sorted(missing))} column: expected {expect}.")
        clusters = torch.full((num_samples,), -1, dtype=torch.long)
        for line, row in enumerate(reader, start=2):
            try:
                i, k = int(row["index"]), int(row["cluster"])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{str(path)!r}, line {line}: index and cluster must be integers; expected {expect}."
                ) from None
            if not 0 <= i < num_samples:
                raise ConfigError(f"{str(path)!r}, line {line}: index {i} is out of range; expected {expect}.")
            if labels is not None and row.get("label") not in (None, "") and int(row["label"]) != int(labels[i]):
                raise ConfigError(
                    f"{str(path)!r}, line {line}: sample {i} has label {row['label']} in the file but "
                    f"{int(labels[i])} in the dataset: the file belongs to other data (or another split order)."
                )
            clusters[i] = k
    absent = (clusters < 0).nonzero().flatten()
    if len(absent):
        raise ConfigError(
            f"{str(path)!r} gives no cluster for {len(absent)} training samples (first: {absent[:5].tolist()}); "
            f"expected {expect}."
        )
    return clusters
