"""robust_groups.clustering: k-means with cosine distance, agreement with true groups, the assignment CSV."""

from __future__ import annotations

import pytest
import torch
from robust_groups.clustering import cluster, kmeans, read_assignment, write_assignment

from robust.api import adjusted_rand_index, agreement
from robust.errors import ConfigError


def directions(n_per: int, centers: torch.Tensor, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    points = centers.repeat_interleave(n_per, dim=0)
    # Cosine k-means ignores length: scale every point by a random factor to prove it.
    scale = torch.rand(len(points), 1, generator=gen) * 9 + 1
    return (points + noise * torch.randn(points.shape, generator=gen)) * scale


def test_kmeans_recovers_separated_directions_whatever_their_length():
    centers = torch.eye(4)
    x = directions(25, centers)
    truth = torch.arange(4).repeat_interleave(25)
    ids = kmeans(x, 4, seed=3)
    assert adjusted_rand_index(ids, truth) == pytest.approx(1.0)
    # Euclidean k-means would split by length; cosine does not: same result for rescaled inputs.
    assert adjusted_rand_index(kmeans(x * 100, 4, seed=3), truth) == pytest.approx(1.0)


def test_kmeans_is_reproducible_and_handles_more_clusters_than_points():
    x = directions(10, torch.eye(3))
    assert torch.equal(kmeans(x, 5, seed=0), kmeans(x, 5, seed=0))
    assert kmeans(x[:2], 5).tolist() in ([0, 1], [1, 0])
    with pytest.raises(ConfigError, match="at least 1"):
        kmeans(x, 0)


def test_per_class_clusters_never_mix_classes():
    x = directions(20, torch.eye(4))
    labels = torch.tensor([0, 1, 0, 1]).repeat_interleave(20)
    ids = cluster(x, labels, 2, mode="per_class")
    for c in ids.unique():
        assert labels[ids == c].unique().numel() == 1
    assert set((ids // 2).tolist()) == {0, 1}


def test_adjusted_rand_index_by_hand():
    a = torch.tensor([0, 0, 1, 1])
    assert adjusted_rand_index(a, torch.tensor([5, 5, 2, 2])) == pytest.approx(1.0)  # relabelled: identical
    # Contingency [[1,1],[1,1]]: index 0, expected (2*2)/6 = 2/3, max 2: ARI = (0 - 2/3) / (2 - 2/3) = -0.5.
    assert adjusted_rand_index(a, torch.tensor([0, 1, 0, 1])) == pytest.approx(-0.5)


def test_agreement_reports_a_group_without_a_cluster_of_its_own():
    groups = torch.tensor([0] * 10 + [1] * 10 + [2] * 2)
    merged = torch.tensor([0] * 10 + [1] * 10 + [1] * 2)  # the small group hides in group 1's cluster
    scores = agreement(merged, groups)
    assert scores["worst_group_recall"] == 0.0
    assert scores["purity"] == pytest.approx(20 / 22)
    exact = agreement(groups.clone(), groups)
    assert exact["worst_group_recall"] == 1.0 and exact["ari"] == pytest.approx(1.0)


def test_assignment_csv_round_trip_and_clear_errors(tmp_path):
    labels = torch.tensor([1, 0, 1])
    path = tmp_path / "clusters.csv"
    write_assignment(path, torch.tensor([2, 0, 1]), labels[[2, 0, 1]], torch.tensor([7, 5, 6]), torch.tensor([3, 0, 2]))
    assert path.read_text().splitlines() == ["index,label,cluster,group", "0,1,5,0", "1,0,6,2", "2,1,7,3"]
    assert read_assignment(path, 3, labels).tolist() == [5, 6, 7]
    with pytest.raises(ConfigError, match="no cluster for 1 training samples"):
        read_assignment(path, 4)
    with pytest.raises(ConfigError, match="label 0 in the file but 1"):
        read_assignment(path, 3, torch.tensor([1, 1, 1]))
    (tmp_path / "bad.csv").write_text("index,cluster\n0,x\n")
    with pytest.raises(ConfigError, match="must be integers"):
        read_assignment(tmp_path / "bad.csv", 1)
    with pytest.raises(ConfigError, match="No cluster assignment"):
        read_assignment(tmp_path / "none.csv", 1)


def test_restarts_keep_the_tightest_clustering():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=gen)  # no clear structure: seedings disagree

    def fit(ids: torch.Tensor) -> float:
        z = torch.nn.functional.normalize(x, dim=1)
        centroids = torch.nn.functional.normalize(torch.zeros(8, 6).index_add_(0, ids, z), dim=1)
        return float((z * centroids[ids]).sum())

    # The first restart uses the same seeding as a single run, so more restarts can only fit better.
    assert fit(kmeans(x, 8, seed=4, restarts=8)) >= fit(kmeans(x, 8, seed=4, restarts=1)) - 1e-4
