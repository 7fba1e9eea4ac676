"""What PruSC and IRM-AFE share: an ERM model, and clusters of its representations as pseudo groups.

Phase ``erm`` trains the classifier with plain ERM (or, with ``--from RUN_DIR``, phase ``load``
takes it from another run). Phase ``cluster`` embeds the training split with it and clusters the
embeddings (:mod:`robust_groups.clustering`: k-means, cosine distance). The assignment is kept in a
buffer (checkpointed) and written to ``RUN_DIR/clusters.csv``; where the dataset knows its true
groups, how well the clusters match them goes to ``RUN_DIR/clusters.json`` and the log, scored by
the engine (``ctx.group_agreement``): the method never holds the true groups.
"""

from __future__ import annotations

from typing import Any

import torch
from robust_groups.clustering import cluster, read_assignment, representations, write_assignment
from torch import Tensor

from robust.api import ERM, ConfigError, MethodContext, Phase, atomic_write_json, trained_weights
from robust_prusc.config import PseudoGroupConfig
from robust_prusc.erm_source import check_erm_source


class PseudoGroupMethod(ERM):
    """ERM, then clusters of the ERM model's representations; subclasses add their phases after."""

    config: PseudoGroupConfig

    def __init__(self, config: PseudoGroupConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.register_buffer("clusters", torch.full((ctx.num_train,), -1, dtype=torch.long))

    def first_phases(self) -> list[Phase]:
        """``erm`` (or ``load`` with --from) and ``cluster``: not selectable, their model is not the result."""
        c = self.config
        if c.from_run is not None:
            start = Phase("load", run=self.load_erm_model)
        else:
            start = Phase("erm", epochs=c.erm_epochs, select=False)
        return [start, Phase("cluster", run=self.cluster_representations)]

    # -- phase load -----------------------------------------------------------------------

    def load_erm_model(self) -> None:
        """The classifier of another run directory, refused unless its dataset, model, model options
        (pretrained weights...) and input size are this run's (:mod:`robust_prusc.erm_source`)."""
        c, ctx = self.config, self.ctx
        config, weights = trained_weights(c.from_run, c.from_checkpoint, map_location=ctx.device)
        check_erm_source(c.from_run, config, ctx.config)
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as exc:
            raise ConfigError(
                f"The classifier of {c.from_run!r} does not fit this run's model (different model options or "
                f"dataset options?): {str(exc).splitlines()[0]}. Use the same --set model.* and dataset.* options."
            ) from None
        self.ctx.log(f"ERM model: {c.from_run} ({c.from_checkpoint}).")

    # -- phase cluster --------------------------------------------------------------------

    def cluster_representations(self) -> None:
        c, ctx = self.config, self.ctx
        train = ctx.data.splits["train"]
        labels = train.labels.to(ctx.device)
        if c.clusters is not None:
            assigned = read_assignment(c.clusters, ctx.num_train, train.labels).to(ctx.device)
            source = c.clusters
        else:
            features, _, index = representations(self.model, ctx.batches("train"))
            assigned = torch.empty_like(self.clusters)
            assigned[index] = cluster(
                features,
                labels[index],
                c.num_clusters,
                mode=c.cluster_mode,
                seed=c.cluster_seed,
                restarts=c.cluster_restarts,
            )
            source = f"k-means (cosine), k={c.num_clusters}, {c.cluster_mode}, best of {c.cluster_restarts}"
        self.clusters.copy_(assigned)
        write_assignment(ctx.run_dir / "clusters.csv", torch.arange(ctx.num_train), train.labels, self.clusters.cpu())
        report: dict[str, Any] = {"source": source, "sizes": torch.bincount(self.clusters.cpu()).tolist()}
        # Scored by the engine: the true groups are withheld from this method (robust.attributes).
        match = ctx.group_agreement(self.clusters.cpu(), "train")
        if match is not None:
            report["agreement_with_true_groups"] = match
        atomic_write_json(ctx.run_dir / "clusters.json", report)
        match = report.get("agreement_with_true_groups")
        detail = (
            f"; vs the true groups: ARI {match['ari']:.3f}, purity {match['purity']:.3f}, worst-group recall "
            f"{match['worst_group_recall']:.3f}"
            if match
            else ""
        )
        self.ctx.log(f"Clusters ({source}): {len(report['sizes'])} of sizes {report['sizes']}{detail}.")

    # -- what the later phases read ---------------------------------------------------------

    def pseudo_groups(self) -> Tensor:
        """(class, cluster) pseudo group id of every training sample, ``label * K + cluster``."""
        labels = self.ctx.data.splits["train"].labels.to(self.clusters.device)
        k = int(self.clusters.max()) + 1
        return labels * k + self.clusters
