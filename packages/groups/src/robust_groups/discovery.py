"""Group discovery: infer groups nobody annotated, from a trained model's representations.

``robust discover --from RUN_DIR`` embeds the training split with the run's classifier, clusters
each class's embeddings (:mod:`robust_groups.clustering`, the machinery PruSC uses: cosine k-means,
k-means++ seeding, best of several restarts), and assigns the other splits (val) to the nearest
training centroid of their class, so that cluster ``j`` of a class means the same thing in every
split. The result is a CSV, ``split,index,label,cluster``, that any run reads back as its group
labels with ``--set dataset.groups=FILE`` (group = label × cluster, bias = cluster): a group-based
method (``groupdro``) then trains without annotations, and model selection uses the inferred val
groups. When the data has true groups, how well the inferred ones match them (adjusted Rand index,
purity, worst-group recall) is reported per split; the true groups are never written to the CSV.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.api import ConfigError, DatasetBundle, Split, agreement, atomic_write, atomic_write_json, replace_splits
from robust.api import with_groups as _with_groups
from robust_groups.clustering import cluster, representations
from robust_groups.groups_options import GroupsOptions

COLUMNS = ("split", "index", "label", "cluster")


@dataclass
class Discovery:
    """Inferred clusters per split (within-class ids ``0..k-1``) and their agreement with true groups."""

    num_clusters: int
    labels: dict[str, Tensor]
    clusters: dict[str, Tensor]
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)

    def groups(self, split: str) -> Tensor:
        """Inferred group ids: ``label * k + cluster``."""
        return self.labels[split] * self.num_clusters + self.clusters[split]

    def report(self) -> dict[str, Any]:
        return {
            "num_clusters_per_class": self.num_clusters,
            "splits": {
                name: {
                    "samples": len(self.clusters[name]),
                    "group_sizes": torch.bincount(self.groups(name)).tolist(),
                    **({"agreement_with_true_groups": self.agreement[name]} if name in self.agreement else {}),
                }
                for name in self.clusters
            },
        }


def nearest_centroid(features: Tensor, centroids: Tensor) -> Tensor:
    """Index of the centroid with the largest cosine similarity."""
    return (F.normalize(features, dim=1) @ F.normalize(centroids, dim=1).T).argmax(dim=1)


def discover_groups(
    model: torch.nn.Module,
    split_batches: dict[str, Any],
    splits: dict[str, Split],
    num_clusters: int = 2,
    *,
    seed: int = 1,
    restarts: int = 10,
) -> Discovery:
    """Cluster the first split's representations per class and assign the others to its centroids.

    ``split_batches`` maps split names (the training split first) to an iterable of batches in any
    order; ``splits`` gives each split's true groups for the agreement report (None: no report).
    """
    names = list(split_batches)
    labels_out: dict[str, Tensor] = {}
    clusters_out: dict[str, Tensor] = {}
    centroids: dict[int, Tensor] = {}
    for position, name in enumerate(names):
        features, labels, index = representations(model, split_batches[name])
        features = F.normalize(features, dim=1)
        n = len(splits[name])
        assigned = torch.full((n,), -1, dtype=torch.long)
        ordered_labels = torch.empty(n, dtype=torch.long)
        ordered_labels[index.cpu()] = labels.cpu()
        if position == 0:
            ids = cluster(features, labels, num_clusters, mode="per_class", seed=seed, restarts=restarts).cpu()
            within = ids % num_clusters
            for c in labels.unique().tolist():
                members = (labels == c).cpu()
                sums = torch.zeros(num_clusters, features.shape[1]).index_add_(
                    0, within[members], features[members].cpu()
                )
                centroids[c] = sums
            assigned[index.cpu()] = within
        else:
            for c in labels.unique().tolist():
                members = (labels == c).cpu()
                if c not in centroids:
                    raise ConfigError(
                        f"Class {c} has samples in split {name!r} but none in {names[0]!r}: its groups cannot be "
                        "inferred. Discover on a training split that has every class."
                    )
                assigned[index.cpu()[members]] = nearest_centroid(features[members].cpu(), centroids[c])
        labels_out[name], clusters_out[name] = ordered_labels, assigned
    result = Discovery(num_clusters, labels_out, clusters_out)
    for name in names:
        true = splits[name].groups
        if true is not None:
            result.agreement[name] = agreement(result.groups(name), true)
    return result


def discovery_outputs(path: str | Path) -> tuple[Path, Path]:
    """The two files :func:`write_discovery` writes for ``path``: the CSV and the report beside it."""
    path = Path(path)
    return path, path.with_suffix(".json")


def write_discovery(path: str | Path, discovery: Discovery) -> None:
    """The CSV (``split,index,label,cluster``) and, beside it, ``<name>.json`` with sizes and agreement."""
    path, report = discovery_outputs(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for name, clusters in discovery.clusters.items():
        labels = discovery.labels[name]
        writer.writerows((name, i, int(labels[i]), int(clusters[i])) for i in range(len(clusters)))
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    atomic_write_json(report, discovery.report())


def read_inferred_groups(path: str | Path, splits: dict[str, Split]) -> dict[str, tuple[Tensor, Tensor]]:
    """``{split: (groups, bias)}`` from a discovery CSV, checked against the splits it names:
    every sample once, the same labels (a file made from other data is refused)."""
    path = Path(path)
    expect = (
        "a CSV with the header split,index,label,cluster and one row per sample of each split it covers, "
        "as `robust discover --from RUN_DIR --out FILE` writes"
    )
    if not path.is_file():
        raise ConfigError(f"dataset.groups: no file at {str(path)!r}; expected {expect}.")
    rows: dict[str, list[tuple[int, int, int]]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(
                f"dataset.groups: {str(path)!r} has no {', '.join(sorted(missing))} column; expected {expect}."
            )
        for line, row in enumerate(reader, start=2):
            try:
                entry = int(row["index"]), int(row["label"]), int(row["cluster"])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"dataset.groups: {str(path)!r}, line {line}: index, label and cluster must be integers."
                ) from None
            if entry[2] < 0:
                raise ConfigError(f"dataset.groups: {str(path)!r}, line {line}: cluster must be 0 or more.")
            rows.setdefault(row["split"], []).append(entry)
    unknown = sorted(set(rows) - set(splits))
    if unknown or not rows:
        raise ConfigError(
            f"dataset.groups: {str(path)!r} names split(s) {', '.join(unknown) or '(none)'} that this dataset does "
            f"not have (it has {', '.join(splits)}); expected {expect}."
        )
    if "test" in rows:
        raise ConfigError(
            f"dataset.groups: {str(path)!r} has rows for the test split; inferred groups replace training and "
            "validation groups only (the test split is evaluated on its true groups). Drop those rows."
        )
    k = 1 + max(c for entries in rows.values() for _, _, c in entries)
    out = {}
    for name, entries in rows.items():
        split = splits[name]
        n = len(split)
        index = torch.tensor([e[0] for e in entries], dtype=torch.long)
        if len(entries) != n or not torch.equal(index.sort().values, torch.arange(n)):
            raise ConfigError(
                f"dataset.groups: {str(path)!r} has {len(entries)} rows for split {name!r}, which has {n} samples "
                "(each index 0..n-1 once is expected): it was discovered from other data. Run `robust discover` "
                "on a run with the same dataset options as this one."
            )
        labels = torch.tensor([e[1] for e in entries], dtype=torch.long)
        if not torch.equal(split.labels[index], labels):
            bad = int((split.labels[index] != labels).nonzero()[0])
            raise ConfigError(
                f"dataset.groups: {str(path)!r}: sample {int(index[bad])} of split {name!r} has label "
                f"{int(labels[bad])} in the file but {int(split.labels[index[bad]])} in the dataset: the file was "
                "discovered from other data (or other dataset options)."
            )
        clusters = torch.empty(n, dtype=torch.long)
        clusters[index] = torch.tensor([e[2] for e in entries], dtype=torch.long)
        out[name] = (split.labels * k + clusters, clusters)
    return out


def apply_inferred_groups(bundle: DatasetBundle, options: GroupsOptions) -> DatasetBundle:
    """The ``groups`` dataset transform: the splits the CSV lists get its inferred groups (the training
    group counts stay those of the true groups: the test split keeps its own)."""
    if options.groups is None:
        return bundle
    splits = dict(bundle.splits)
    inferred = read_inferred_groups(options.groups, splits)
    for name, (groups, bias) in inferred.items():
        splits[name] = _with_groups(splits[name], groups, bias)
    return replace_splits(
        bundle,
        splits,
        recount=False,
        transform_options={"groups": options.groups},
        extra={"inferred_groups": {"file": options.groups, "splits": sorted(inferred)}},
    )


def discover_from_run(
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    checkpoint: str = "last",
    num_clusters: int = 2,
    splits: tuple[str, ...] = ("train", "val"),
    device: str = "cpu",
    seed: int = 1,
    restarts: int = 10,
    data_root: str | None = None,
) -> Discovery:
    """Groups inferred from the classifier a run trained (its dataset, with the run's options)."""
    from robust.api import BatchLoader, load_trained_run, resolve_device

    trained = load_trained_run(run_dir, checkpoint, resolve_device(device), data_root)
    name = trained.config.get("dataset", {}).get("name")
    if dataset is not None and dataset != name:
        raise ConfigError(
            f"--dataset {dataset!r} does not match the run: {str(run_dir)!r} trained on {name!r}. Groups are "
            "inferred on the data the model was trained on; drop --dataset or pick a run of that dataset."
        )
    if not splits or splits[0] != "train":
        raise ConfigError("--splits must start with train: clusters are fitted on the training split.")
    missing = [s for s in splits if s not in trained.data.splits or s == "test"]
    if missing:
        raise ConfigError(
            f"--splits {','.join(missing)}: not a training or validation split of {name!r} (it has "
            f"{', '.join(s for s in trained.data.splits if s != 'test')}); test keeps its true groups."
        )
    batches = {}
    for split in splits:
        loader = BatchLoader(
            trained.data.splits[split], trained.data.info, trained.device, batch_size=512, expose_groups=False
        )
        batches[split] = loader.batches(loader.sequential())
    chosen = {split: trained.data.splits[split] for split in splits}
    return discover_groups(trained.model, batches, chosen, num_clusters, seed=seed, restarts=restarts)
