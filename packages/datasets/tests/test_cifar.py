"""CIFAR pickles, the long-tailed and noisy-label protocols, from tiny fake pickles in the real layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from robust.errors import ConfigError, DataError
from robust_datasets import cifar
from robust_datasets import long_tail_noise as protocols
from robust_datasets.testing import cifar10_labels, cifar_images, write_cifar10, write_pickle

PER_CLASS_100 = 6  # CIFAR-100 fixture: 600 training images


def write_cifar100(folder: Path, per_class: int = PER_CLASS_100):
    coarse_of = np.arange(100) // 5  # 20 superclasses of 5 fine classes
    for name, n, seed in (("train", per_class, 3), ("test", 2, 4)):
        fine = np.tile(np.arange(100), n)
        write_pickle(
            folder / name,
            {"fine_labels": fine.tolist(), "coarse_labels": coarse_of[fine].tolist(), "data": cifar_images(fine, seed)},
        )
    write_pickle(
        folder / "meta",
        {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]},
    )


@pytest.fixture(scope="module")
def c10(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("c10")
    write_cifar10(root / "cifar-10-batches-py")
    return root


@pytest.fixture(scope="module")
def c100(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("c100")
    write_cifar100(root / "cifar-100-python")
    return root


# --- long-tail counts: the spec's numbers, independent of the fixtures --------------------------


def test_long_tailed_counts_match_the_published_numbers():
    assert protocols.long_tailed_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(protocols.long_tailed_counts(5000, 10, 100)) == 12406
    assert protocols.long_tailed_counts(5000, 10, 50) == [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]
    assert protocols.long_tailed_counts(5000, 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert sum(protocols.long_tailed_counts(5000, 10, 10)) == 20431
    for rho, total in ((100, 10847), (50, 12608), (10, 19573)):
        counts = protocols.long_tailed_counts(500, 100, rho)
        assert sum(counts) == total and counts[0] == 500
    assert protocols.long_tailed_counts(500, 100, 100)[-1] == 5
    # Meta-Weight-Net: 10 meta images per class first, n_max = (50000 - 100) / 10; truncation gives 49
    mwnet = protocols.long_tailed_counts((50000 - 10 * 10) / 10, 10, 100)
    assert mwnet == [4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49] and sum(mwnet) == 12380
    # CLP's arithmetic (n_max / rho^x) agrees on these settings
    for n_max, C in ((4900, 10), (490, 100), (5000, 10)):
        for rho in (10, 50, 100, 200):
            assert protocols.long_tailed_counts(n_max, C, rho, formula="divide") == protocols.long_tailed_counts(
                n_max, C, rho
            )
    assert protocols.long_tailed_counts(5000, 10, 100, profile="step") == [5000] * 5 + [50] * 5
    assert protocols.long_tailed_counts(4990, 10, 1) == [4990] * 10
    with pytest.raises(ValueError, match=r"not 0\.01"):
        protocols.long_tailed_counts(5000, 10, 0.01)


def clp_reference(labels: np.ndarray, seed: int, rho: float, num_meta_total: int, corruption, ratio):
    """CLP's CIFAR_process.build_dataloader index logic, transcribed loop for loop (legacy numpy RNG)."""
    rs = np.random.RandomState(seed)
    num_classes = int(labels.max()) + 1
    num_meta = int(num_meta_total / num_classes)
    sample_num = int((len(labels) - num_meta_total) / num_classes)
    counts = [int(sample_num / (rho ** (c / (num_classes - 1)))) for c in range(num_classes)]
    rs.shuffle(counts)
    to_meta, to_train = [], []
    for c in range(num_classes):
        index_to_class = [i for i, y in enumerate(labels) if y == c]
        rs.shuffle(index_to_class)
        to_meta.extend(index_to_class[:num_meta])
        to_train.extend(index_to_class[num_meta:][: counts[c]])
    targets = list(labels[to_train])
    if corruption is not None:
        matrix = np.eye(num_classes) * (1 - ratio)
        rows = np.arange(num_classes)
        for i in range(num_classes):
            matrix[i][rs.choice(rows[rows != i], 2, replace=False)] = ratio / 2  # flip2
        targets = [rs.choice(num_classes, p=matrix[t]) for t in targets]
    return to_train, to_meta, counts, np.array(targets)


def test_long_tailed_indices_reproduce_clp_exactly():
    labels = np.random.default_rng(5).integers(0, 10, size=3000)
    train_ref, meta_ref, counts_ref, noisy_ref = clp_reference(labels, 7, 20, 100, "flip2", 0.4)
    rng = np.random.RandomState(7)
    selection = cifar.select_long_tailed(labels, 10, 20, "clp", seed=7, num_meta=10, rng=rng)
    assert selection.train.tolist() == train_ref and selection.meta.tolist() == meta_ref
    assert selection.counts == counts_ref and sorted(counts_ref) != counts_ref  # CLP's shuffled class order
    matrix = protocols.transition_matrix("flip2", 0.4, 10, rng=rng)
    noisy = protocols.noisy_labels(labels[selection.train], 10, "flip2", 0.4, rng=rng, matrix=matrix)
    assert np.array_equal(noisy, noisy_ref)


def test_long_tailed_indices_generic_label_vector():
    labels = np.repeat(np.arange(4), 50)
    sel = protocols.long_tailed_indices(labels, 10, 0, num_meta=5)
    assert sel.counts == protocols.long_tailed_counts(45, 4, 10)
    assert np.bincount(labels[sel.train], minlength=4).tolist() == sel.counts == sel.kept
    assert np.bincount(labels[sel.meta], minlength=4).tolist() == [5] * 4
    assert not set(sel.train) & set(sel.meta)
    again = protocols.long_tailed_indices(labels, 10, 0, num_meta=5)
    assert np.array_equal(sel.train, again.train)
    other = protocols.long_tailed_indices(labels, 10, 1, num_meta=5)
    assert not np.array_equal(sel.train, other.train)
    # a class with fewer images than asked keeps what it has
    short = protocols.long_tailed_indices(labels, 1, 0, n_max=60)
    assert short.counts == [60] * 4 and short.kept == [50] * 4


# --- noise -----------------------------------------------------------------------------------


def test_noisy_labels_equal_the_per_sample_choice_loop():
    labels = np.random.default_rng(1).integers(0, 10, size=500)
    matrix = protocols.transition_matrix("unif", 0.6, 10)
    rs = np.random.RandomState(3)
    loop = [rs.choice(10, p=matrix[y]) for y in labels]
    assert protocols.noisy_labels(labels, 10, "unif", 0.6, 3).tolist() == loop


def test_uniform_noise_rate_includes_the_true_class():
    labels = np.random.default_rng(0).integers(0, 10, size=100_000)
    noisy = protocols.noisy_labels(labels, 10, "unif", 0.4, 1)
    assert abs((noisy != labels).mean() - 0.4 * 9 / 10) < 0.01
    matrix = protocols.transition_matrix("unif", 0.4, 10)
    assert np.allclose(matrix.sum(1), 1) and np.allclose(np.diag(matrix), 0.6 + 0.04)


def test_flip_noise_structure():
    matrix = protocols.transition_matrix("flip", 0.4, 10)
    assert np.allclose(matrix.sum(1), 1) and np.allclose(np.diag(matrix), 0.6)
    partner = {}
    for i in range(10):
        off = np.flatnonzero((matrix[i] > 0) & (np.arange(10) != i))
        assert len(off) == 1 and matrix[i, off[0]] == pytest.approx(0.4)
        partner[i] = off[0]
    # Meta-Weight-Net: the flip pattern has its own seed (1), the same whatever the data seed
    assert np.array_equal(matrix, protocols.transition_matrix("flip", 0.4, 10))
    labels = np.random.default_rng(0).integers(0, 10, size=20_000)
    noisy = protocols.noisy_labels(labels, 10, "flip", 0.4, seed=9)
    changed = noisy != labels
    assert all(noisy[k] == partner[labels[k]] for k in np.flatnonzero(changed))
    assert abs(changed.mean() - 0.4) < 0.02


def test_flip2_noise_structure():
    matrix = protocols.transition_matrix("flip2", 0.4, 100)
    for i in range(100):
        off = np.flatnonzero((matrix[i] > 0) & (np.arange(100) != i))
        assert len(off) == 2 and np.allclose(matrix[i, off], 0.2) and matrix[i, i] == pytest.approx(0.6)
    labels = np.random.default_rng(0).integers(0, 100, size=20_000)
    noisy = protocols.noisy_labels(labels, 100, "flip2", 0.4, seed=2, matrix=matrix)
    assert np.all(matrix[labels, noisy] > 0)
    assert abs((noisy != labels).mean() - 0.4) < 0.02


def test_hierarchical_noise_stays_in_the_superclass():
    coarse = np.arange(100) // 5
    matrix = protocols.transition_matrix("hierarchical", 0.4, 100, superclasses=coarse)
    assert np.allclose(matrix.sum(1), 1)
    assert np.allclose(matrix[0, :5], [0.6, 0.1, 0.1, 0.1, 0.1]) and matrix[0, 5:].sum() == 0
    with pytest.raises(ValueError, match="superclasses"):
        protocols.transition_matrix("hierarchical", 0.4, 100)


# --- loading the pickles ---------------------------------------------------------------------


def test_cifar10_pickles_and_stratified_val(c10):
    bundle = cifar.load_cifar10({"val_size": 50}, c10)
    info = bundle.info
    assert info.num_classes == 10 and info.class_names[0] == "airplane" and info.input_shape == (3, 32, 32)
    assert info.group_names == info.class_names and info.train_augment == "crop_flip"
    train, val, test = bundle.splits["train"], bundle.splits["val"], bundle.splits["test"]
    assert (len(train), len(val), len(test)) == (250, 50, 50)
    assert torch.bincount(val.labels, minlength=10).tolist() == [5] * 10
    assert torch.equal(train.groups, train.labels) and train.bias is None
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)
    # the R plane (channel 0) holds 2·label: the reshape is (N, 3, 32, 32) with planes in order
    assert torch.equal(train.images[:, 0, 5, 7].long(), train.labels * 2)
    assert torch.equal(test.images[:, 0, 31, 31].long(), test.labels * 2)
    assert info.train_group_counts == [25] * 10
    same = cifar.load_cifar10({"val_size": 50}, c10)
    assert torch.equal(same.splits["val"].images, val.images)


def test_cifar10_val_size_zero_is_test(c10):
    bundle = cifar.load_cifar10({"val_size": 0}, c10)
    assert len(bundle.splits["train"]) == 300 and bundle.info.extra["val_is_test"]
    assert torch.equal(bundle.splits["val"].labels, bundle.splits["test"].labels)


def test_cifar100_fine_labels_and_superclasses(c100):
    bundle = cifar.load_cifar100({"val_size": 100}, c100)
    assert bundle.info.num_classes == 100 and bundle.info.class_names[3] == "fine3"
    assert bundle.info.extra["superclasses"] == (np.arange(100) // 5).tolist()
    assert len(bundle.splits["train"]) == 500 and len(bundle.splits["test"]) == 200


def test_long_tailed_cifar10_mwnet(c10):
    bundle = cifar.load_cifar10_lt({"imb_factor": 10, "num_meta": 2}, c10)
    extra = bundle.info.extra
    n_max = (300 - 20) / 10
    assert extra["train_class_counts"] == protocols.long_tailed_counts(n_max, 10, 10)
    train, meta = bundle.splits["train"], bundle.aux["meta"]
    assert torch.bincount(train.labels, minlength=10).tolist() == extra["train_class_counts"]
    assert torch.bincount(meta.labels, minlength=10).tolist() == [2] * 10
    assert bundle.info.train_group_counts == extra["train_class_counts"]
    # meta and train are disjoint images; val is the meta set
    train_rows = {bytes(x.numpy()) for x in train.images}
    assert not any(bytes(x.numpy()) in train_rows for x in meta.images)
    assert torch.equal(bundle.splits["val"].images, meta.images) and extra["val_source"] == "meta"
    assert len(bundle.splits["test"]) == 50


def test_long_tailed_clp_shuffles_the_class_order(c10):
    options = {"imb_factor": 10, "recipe": "clp", "seed": 3, "num_meta": 10}  # CLP's 100 / class: fixture too small
    bundle = cifar.load_cifar10_lt(options, c10)
    extra = bundle.info.extra
    n_max = int((300 - 100) / 10)
    assert extra["num_meta"] == 10
    assert sorted(extra["class_counts_requested"], reverse=True) == protocols.long_tailed_counts(n_max, 10, 10)
    assert extra["class_counts_requested"] != sorted(extra["class_counts_requested"], reverse=True)
    flat = cifar.load_cifar10_lt({**options, "shuffle_class_order": False}, c10)
    assert flat.info.extra["class_counts_requested"] == protocols.long_tailed_counts(n_max, 10, 10)


def test_long_tailed_ldam_has_no_meta_set(c10):
    bundle = cifar.load_cifar10_lt({"imb_factor": 10, "protocol": "ldam"}, c10)
    assert bundle.aux == {} and bundle.info.extra["val_is_test"]
    assert bundle.info.extra["train_class_counts"] == protocols.long_tailed_counts(30, 10, 10)
    with pytest.raises(ConfigError, match="meta set"):
        cifar.load_cifar10_lt({"protocol": "ldam", "val_source": "meta"}, c10)


def test_noisy_cifar10_meta_clean_train_noisy(c10):
    bundle = cifar.load_cifar10_noisy({"corruption_type": "flip", "corruption_ratio": 0.5, "num_meta": 5}, c10)
    extra = bundle.info.extra
    train, meta = bundle.splits["train"], bundle.aux["meta"]
    assert len(train) == 250 and len(meta) == 50
    assert torch.bincount(meta.labels, minlength=10).tolist() == [5] * 10
    # the meta set is clean: the R plane encodes the true label
    assert torch.equal(meta.images[:, 0, 0, 0].long(), meta.labels * 2)
    clean = torch.tensor(extra["clean_train_labels"])
    assert torch.equal(train.images[:, 0, 0, 0].long(), clean * 2)
    changed = train.labels != clean
    matrix = np.array(extra["transition_matrix"])
    assert np.all(matrix[clean.numpy(), train.labels.numpy()] > 0)
    assert extra["noise_rate"] == pytest.approx(changed.float().mean().item()) and 0.3 < extra["noise_rate"] < 0.7
    assert torch.equal(train.groups, train.labels)  # groups are the observed (noisy) labels
    assert torch.equal(bundle.splits["val"].labels, meta.labels)
    with pytest.raises(ConfigError, match="hierarchical"):
        cifar.load_cifar10_noisy({"corruption_type": "hierarchical"}, c10)


def test_noisy_cifar100_hierarchical_stays_in_superclass(c100):
    bundle = cifar.load_cifar100_noisy({"corruption_type": "hierarchical", "num_meta": 2}, c100)
    assert len(bundle.aux["meta"]) == 200 and len(bundle.splits["train"]) == 400
    assert torch.bincount(bundle.aux["meta"].labels, minlength=100).tolist() == [2] * 100
    clean = np.array(bundle.info.extra["clean_train_labels"])
    noisy = bundle.splits["train"].labels.numpy()
    assert np.all(clean // 5 == noisy // 5) and (clean != noisy).any()


def test_noisy_clp_protocol_reproduces_clp(c10):
    bundle = cifar.load_cifar10_noisy(
        {"corruption_type": "flip2", "protocol": "clp", "num_meta": 3, "seed": 4}, c10
    )  # "protocol": the old name, still read
    labels = cifar10_labels()
    train_ref, meta_ref, _, noisy_ref = clp_reference(labels, 4, 1.0, 30, "flip2", 0.4)
    assert np.array_equal(bundle.splits["train"].labels.numpy(), noisy_ref)
    assert bundle.info.extra["clean_train_labels"] == labels[train_ref].tolist()
    assert bundle.aux["meta"].labels.tolist() == labels[meta_ref].tolist()


def test_default_meta_set_is_1000_images(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py", per_class=101, test_per_class=1)
    bundle = cifar.load_cifar10_noisy({}, tmp_path)
    assert torch.bincount(bundle.aux["meta"].labels).tolist() == [100] * 10
    assert len(bundle.splits["train"]) == 10


# --- errors ----------------------------------------------------------------------------------


def test_missing_file_names_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, per_class=2, test_per_class=1)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as err:
        cifar.load_cifar10({}, tmp_path)
    assert "cifar-10-batches-py" in str(err.value) and "cs.toronto.edu" in str(err.value)
    with pytest.raises(DataError, match="missing or incomplete"):
        cifar.load_cifar100({}, tmp_path)


def test_corrupt_pickle_and_wrong_keys(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, per_class=2, test_per_class=1)
    (folder / "test_batch").write_bytes(b"\x80\x02garbage, not a pickle")
    with pytest.raises(DataError, match=r"test_batch.*not a valid pickle"):
        cifar.load_cifar10({"val_size": 0}, tmp_path)
    write_pickle(folder / "test_batch", {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0]})
    with pytest.raises(DataError, match=r"test_batch.*keys \['data', 'fine_labels'\].*expected \['data', 'labels'\]"):
        cifar.load_cifar10({"val_size": 0}, tmp_path)
    write_pickle(folder / "test_batch", {"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]})
    with pytest.raises(DataError, match=r"shape \(2, 1024\)"):
        cifar.load_cifar10({"val_size": 0}, tmp_path)
    write_pickle(folder / "test_batch", [1, 2, 3])
    with pytest.raises(DataError, match="not the dict"):
        cifar.load_cifar10({"val_size": 0}, tmp_path)


def test_registry_end_to_end(c10):
    from robust.registry import get_registry

    for name, options in (("cifar10", {"val_size": 20}), ("cifar10-lt", {"imb_factor": 5, "num_meta": 1}),
                          ("cifar10-noisy", {"num_meta": 2})):  # fmt: skip
        entry = get_registry().get("dataset", name)
        bundle = entry.load()(entry.load_config().model_validate(options), c10)
        assert bundle.info.name == name and set(bundle.splits) == {"train", "val", "test"}


# --- untrusted pickles: a data file must not run code (issue 18) ------------------------------


class _RunsCode:
    """Pickles as a call to os.system: plain pickle.load would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def test_crafted_pickle_is_refused_and_never_run(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, per_class=2, test_per_class=1)
    marker = tmp_path / "pwned"
    write_pickle(
        folder / "test_batch", {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _RunsCode(f"touch {marker}")}
    )
    with (folder / "test_batch").open("rb") as f:  # the payload is live: plain pickle runs it
        pickle.load(f, encoding="latin1")
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataError, match=r"Refused to read the CIFAR file '.*test_batch'.*posix\.system.*nothing in it"):
        cifar.load_cifar10({"val_size": 0}, tmp_path)
    assert not marker.exists()

    from robust_datasets.lff_generators import _read_cifar_batches  # the LfF generator reads the same batches

    with pytest.raises(DataError, match=r"Refused.*test_batch"):
        _read_cifar_batches(folder)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["builtins eval", "builtins getattr", "numpy load", "numpy.testing measure"])
def test_only_numpy_reconstruction_globals_resolve(tmp_path, payload):
    module, name = payload.split()
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x06\x00\x00\x00print1\x85R.")
    with pytest.raises(DataError, match=rf"Refused.*batch.*{module}\.{name}"):
        cifar.unpickle(path)


def test_codecs_encode_carries_only_latin1_bytes(tmp_path):
    path = tmp_path / "batch"  # _codecs.encode is allowed for protocol-2 bytes; other codecs are not data
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DataError, match=r"not a valid pickle.*rot13"):
        cifar.unpickle(path)


# A CIFAR-10 file as Python 2's cPickle writes it (the real downloads): SHORT_BINSTRING (py2 str),
# numpy.core.multiarray._reconstruct, the dtype state of numpy 1.x. Decoded with latin-1.
PY2_BATCH = (
    b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04"
    b"U\x01b\x87q\x05Rq\x06(K\x01K\x02K\x03\x86q\x07cnumpy\ndtype\nq\x08U\x02u1K\x00K\x01\x87Rq\t(K\x03U\x01|NNN"
    b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbI00\nU\x06\x00\x01\x02\x03\xff\x05tbU\x06labelsq\n]q\x0b(K\x01K\x02eu."
)


def test_real_formats_still_load(tmp_path):
    path = tmp_path / "py2"
    path.write_bytes(PY2_BATCH)
    content = cifar.unpickle(path)
    assert content["labels"] == [1, 2]
    np.testing.assert_array_equal(content["data"], np.array([[0, 1, 2], [3, 255, 5]], np.uint8))
    batch = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [np.int64(1), 2], b"names": [b"a", "b"]}
    for protocol in (2, 4, 5):  # files re-saved by today's numpy name numpy._core and _frombuffer
        (tmp_path / "new").write_bytes(pickle.dumps(batch, protocol=protocol))
        content = cifar.unpickle(tmp_path / "new")
        np.testing.assert_array_equal(content["data"], batch[b"data"])
        assert content["labels"] == [1, 2] and content["names"] == [b"a", "b"]
