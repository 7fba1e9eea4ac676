"""Long-tailed subsampling and label noise, as Meta-Weight-Net, LDAM-DRW and CLP define them.

Numpy only (no torch), and independent of CIFAR: every function takes a label vector, so the same
protocols apply to any dataset (the CLP issue uses them on synthetic data too).

Long tail (exponential profile): class ``i`` of ``C`` keeps ``n_i = int(n_max · ρ^(−i/(C−1)))``
images, truncated (not rounded), with ``ρ = imb_factor = n_max / n_min`` (≥ 1). The ``step``
profile (LDAM) keeps ``n_max`` for the first ``C // 2`` classes and ``int(n_max / ρ)`` for the rest.

Selection (:func:`long_tailed_indices`), as CLP's ``CIFAR_process.build_dataloader`` does it:
one legacy ``np.random.RandomState(seed)`` stream; optionally shuffle the list of class counts
(CLP's quirk: which class is the head is random); then for each class in label order, shuffle its
indices (ascending order first), move the first ``num_meta`` to the clean meta set, and keep the
first ``n_c`` of the rest for training. With the same seed this draws the same numbers as CLP's
code (NumPy's legacy generator is stable across versions), so the selected images are the same.

Label noise (:func:`transition_matrix`, :func:`noisy_labels`): each training label ``y`` is
resampled from row ``y`` of a transition matrix ``T``, one draw per sample in order, exactly as
``np.random.choice(C, p=T[y])`` in a loop would (vectorised here):

- ``unif``: ``T = r/C · 11ᵀ + (1 − r)·I``: uniform over all classes, the true one included, so
  the real flip rate is ``r·(C−1)/C``;
- ``flip``: ``1 − r`` on the diagonal, ``r`` on one other class per row, chosen at random;
- ``flip2``: ``r/2`` on each of two distinct other classes per row;
- ``hierarchical`` (CIFAR-100): ``r`` spread evenly over the other fine classes of the same
  superclass (``superclasses[c]`` = the coarse class of fine class ``c``).

Meta-Weight-Net draws the flip pattern from its own generator seeded with 1 (the same pattern in
every run); CLP draws it from the shared stream. Pass ``rng`` to do the latter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

CORRUPTIONS = ("unif", "flip", "flip2", "hierarchical")
FLIP_SEED = 1  # Meta-Weight-Net's fixed seed for the flip pattern

Profile = Literal["exp", "step"]
Formula = Literal["multiply", "divide"]


def long_tailed_counts(
    n_max: float,
    num_classes: int,
    imb_factor: float,
    *,
    profile: Profile = "exp",
    formula: Formula = "multiply",
) -> list[int]:
    """Images kept per class, class 0 the head: ``int(n_max · ρ^(−i/(C−1)))`` for ``exp``.

    ``formula`` only says how the float is computed: ``multiply`` is LDAM's and Meta-Weight-Net's
    ``n_max · (1/ρ)^(i/(C−1))``, ``divide`` CLP's ``n_max / ρ^(i/(C−1))``. They agree on every
    CIFAR setting we checked; both exist so each protocol truncates exactly as its code does.
    """
    if imb_factor < 1:
        raise ValueError(f"imb_factor is n_max / n_min and must be >= 1, got {imb_factor} (pass 100, not 0.01)")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if profile == "step":
        head = num_classes // 2
        return [int(n_max)] * head + [int(n_max / imb_factor)] * (num_classes - head)
    if profile != "exp":
        raise ValueError(f"profile must be 'exp' or 'step', got {profile!r}")
    if num_classes == 1:
        return [int(n_max)]
    counts = []
    for i in range(num_classes):
        exponent = i / (num_classes - 1.0)
        if formula == "divide":
            counts.append(int(n_max / (imb_factor**exponent)))
        else:
            counts.append(int(n_max * ((1.0 / imb_factor) ** exponent)))
    return counts


@dataclass
class LongTailedSelection:
    """Which samples of a label vector :func:`long_tailed_indices` kept.

    ``train`` and ``meta`` are indices into the label vector, grouped by class in label order
    (the order CLP's training set has). ``counts[c]`` is the number of training images of class
    ``c`` asked for; ``kept[c]`` the number kept (smaller only when the class ran out of images).
    """

    train: np.ndarray
    meta: np.ndarray
    counts: list[int]
    kept: list[int] = field(default_factory=list)


def long_tailed_indices(
    labels: Sequence[int] | np.ndarray,
    imb_factor: float,
    generator_seed: int | None = None,
    *,
    num_classes: int | None = None,
    num_meta: int = 0,
    n_max: float | None = None,
    shuffle_class_order: bool = False,
    profile: Profile = "exp",
    formula: Formula = "multiply",
    rng: np.random.RandomState | None = None,
) -> LongTailedSelection:
    """A clean balanced meta set of ``num_meta`` per class, and a long-tailed training set.

    ``n_max`` defaults to ``(N − num_meta·C) / C`` (Meta-Weight-Net; CLP floors it, pass
    ``n_max=int(...)``). ``imb_factor = 1`` keeps everything that is not in the meta set.
    ``rng`` (a legacy ``RandomState``) is used and advanced instead of a fresh one seeded with
    ``generator_seed``, so that label noise can continue the same stream, as CLP does.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if rng is None:
        if generator_seed is None:
            raise ValueError("pass generator_seed or rng")
        rng = np.random.RandomState(generator_seed)
    if n_max is None:
        n_max = (len(labels) - num_meta * num_classes) / num_classes
    counts = long_tailed_counts(n_max, num_classes, imb_factor, profile=profile, formula=formula)
    if shuffle_class_order:
        rng.shuffle(counts)  # a list, as CLP shuffles it
    train, meta, kept = [], [], []
    for c in range(num_classes):
        index = np.flatnonzero(labels == c)
        if len(index) < num_meta:
            raise ValueError(f"class {c} has {len(index)} samples, fewer than num_meta = {num_meta}")
        rng.shuffle(index)
        meta.append(index[:num_meta])
        chosen = index[num_meta:][: counts[c]]
        train.append(chosen)
        kept.append(len(chosen))
    empty = np.empty(0, dtype=np.int64)
    return LongTailedSelection(
        train=np.concatenate(train) if train else empty,
        meta=np.concatenate(meta) if meta else empty,
        counts=list(counts),
        kept=kept,
    )


def stratified_holdout(
    labels: Sequence[int] | np.ndarray, size: int, seed: int, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(rest, held_out)``: ``size`` samples held out, as equal a share per class as possible.

    Class ``c`` gives ``size // C`` samples, plus one for the first ``size % C`` classes; both
    outputs are sorted. Used to carve a validation split out of a training set that has none.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    rng = np.random.RandomState(seed)
    held = []
    for c in range(num_classes):
        want = size // num_classes + (1 if c < size % num_classes else 0)
        index = np.flatnonzero(labels == c)
        if len(index) <= want and want > 0:
            raise ValueError(f"class {c} has {len(index)} samples; holding out {want} would leave none")
        rng.shuffle(index)
        held.append(index[:want])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), held_out, assume_unique=True)
    return rest, held_out


def transition_matrix(
    corruption_type: str,
    corruption_ratio: float,
    num_classes: int,
    *,
    rng: np.random.RandomState | None = None,
    seed: int = FLIP_SEED,
    superclasses: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """The ``C × C`` row-stochastic matrix ``T[y, y']`` = P(noisy label y' | true label y).

    ``flip`` and ``flip2`` draw their pattern from ``rng`` when given (CLP), else from a fresh
    generator seeded with ``seed`` (Meta-Weight-Net: always 1). ``hierarchical`` needs
    ``superclasses``; a superclass with a single fine class keeps its label.
    """
    r = float(corruption_ratio)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"corruption_ratio must be in [0, 1], got {r}")
    C = num_classes
    if corruption_type == "unif":
        return np.eye(C) * (1 - r) + np.full((C, C), 1 / C) * r
    if corruption_type in ("flip", "flip2"):
        needed = 2 if corruption_type == "flip" else 3
        if needed > C:
            raise ValueError(f"{corruption_type} noise needs more classes than {C}")
        rng = rng if rng is not None else np.random.RandomState(seed)
        matrix = np.eye(C) * (1 - r)
        rows = np.arange(C)
        for i in range(C):
            if corruption_type == "flip":
                matrix[i][rng.choice(rows[rows != i])] = r
            else:
                matrix[i][rng.choice(rows[rows != i], 2, replace=False)] = r / 2
        return matrix
    if corruption_type == "hierarchical":
        if superclasses is None:
            raise ValueError("hierarchical noise needs superclasses (the coarse class of each fine class)")
        coarse = np.asarray(superclasses, dtype=np.int64)
        if coarse.shape != (C,):
            raise ValueError(f"superclasses must have one entry per class ({C}), got shape {coarse.shape}")
        matrix = np.eye(C) * (1 - r)
        for i in range(C):
            others = np.flatnonzero((coarse == coarse[i]) & (np.arange(C) != i))
            if len(others) == 0:
                matrix[i, i] = 1.0
            else:
                matrix[i, others] += r / len(others)
        return matrix
    raise ValueError(f"corruption_type must be one of {', '.join(CORRUPTIONS)}, got {corruption_type!r}")


def noisy_labels(
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    corruption_type: str,
    corruption_ratio: float,
    seed: int | None = 1,
    *,
    rng: np.random.RandomState | None = None,
    matrix: np.ndarray | None = None,
    superclasses: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Each label resampled from its row of the transition matrix (int64, same order).

    Same numbers as Meta-Weight-Net's / CLP's loop ``np.random.choice(C, p=T[y])`` over the
    samples in order, from ``rng`` (advanced) or a fresh ``RandomState(seed)``: each draw is one
    uniform number looked up in the row's normalised cumulative sum. ``matrix`` defaults to
    :func:`transition_matrix` with Meta-Weight-Net's fixed flip seed.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}")
    if matrix is None:
        matrix = transition_matrix(corruption_type, corruption_ratio, num_classes, superclasses=superclasses)
    if rng is None:
        if seed is None:
            raise ValueError("pass seed or rng")
        rng = np.random.RandomState(seed)
    cdf = np.cumsum(matrix, axis=1)
    cdf /= cdf[:, -1:]
    uniform = rng.random_sample(len(labels))
    out = np.empty_like(labels)
    for c in range(num_classes):
        mine = labels == c
        out[mine] = np.searchsorted(cdf[c], uniform[mine], side="right")
    return out


# -- the same protocols on any registered dataset ---------------------------------------------


class ClassProtocolOptions(BaseModel):
    """Dataset options every dataset accepts (``--set dataset.imb_factor=10``), applied after loading
    (the dataset transform ``meta_longtail_noise``, after ``frac``).

    A dataset whose own options have one of these names (CIFAR-LT's ``imb_factor``) handles it
    itself; these apply to the others. Order, as CLP builds its data: the clean meta set
    (``meta_per_class`` from train), the long tail (train), then label noise (train).
    """

    model_config = ConfigDict(extra="forbid")

    meta_per_class: int | None = Field(
        None, ge=1, description="Move this many clean training images per class to a meta set (aux 'meta')."
    )
    imb_factor: float | None = Field(
        None,
        ge=1,
        description="Long-tailed training set: class c keeps int(n_max * imb_factor^(-c/(C-1))) images, n_max = "
        "the smallest class's count (after the meta set), class 0 the head.",
    )
    noise: Literal["unif", "flip", "flip2"] | None = Field(
        None, description="Label noise on the training set (Meta-Weight-Net's transition matrices)."
    )
    noise_ratio: float = Field(0.0, ge=0, le=1, description="Corruption ratio of `noise`.")
    protocol_seed: int = Field(
        0, ge=0, description="Seed of the dataset transforms that draw samples (frac, meta set, long tail, noise)."
    )

    def active(self) -> bool:
        return any(v is not None for v in (self.meta_per_class, self.imb_factor, self.noise))


def apply_class_protocol(bundle: Any, options: ClassProtocolOptions) -> Any:
    """The bundle (a ``robust.api.DatasetBundle``) with the meta set, long tail and label noise of
    ``options`` applied (a new one)."""
    import torch

    from robust.api import DataError, replace_splits, subset_split, with_labels

    if not options.active():
        return bundle
    splits, aux = dict(bundle.splits), dict(bundle.aux)
    extra: dict[str, Any] = {}
    seed = options.protocol_seed
    C = bundle.info.num_classes
    train = splits["train"]
    labels = train.labels.numpy()
    try:
        if options.meta_per_class is not None or options.imb_factor is not None:
            if options.meta_per_class is not None and "meta" in aux:
                raise ValueError("the dataset already has a meta set; meta_per_class would replace it")
            selection = long_tailed_indices(
                labels,
                options.imb_factor or 1.0,
                seed,
                num_classes=C,
                num_meta=options.meta_per_class or 0,
                # With a long tail, the smallest class can fill its quota (the counts follow the profile
                # exactly); without one, every class keeps all it has after the meta set.
                n_max=float(np.bincount(labels, minlength=C).min() if options.imb_factor is not None else len(labels))
                - (options.meta_per_class or 0),
            )
            if options.meta_per_class is not None:
                aux["meta"] = subset_split(train, torch.from_numpy(selection.meta))
            train = subset_split(train, torch.from_numpy(np.sort(selection.train)))
            extra["protocol_train_counts"] = np.bincount(train.labels.numpy(), minlength=C).tolist()
        if options.noise is not None:
            clean = train.labels.numpy()
            rng = np.random.RandomState(seed)
            matrix = transition_matrix(options.noise, options.noise_ratio, C, rng=rng)
            noisy = noisy_labels(clean, C, options.noise, options.noise_ratio, rng=rng, matrix=matrix)
            train = with_labels(train, torch.from_numpy(noisy))
            extra["protocol_noise_rate"] = float((noisy != clean).mean()) if len(clean) else 0.0
    except ValueError as exc:
        given = ", ".join(f"{k}={v}" for k, v in options.model_dump(exclude_defaults=True).items())
        raise DataError(
            f"Cannot apply {given} to dataset {bundle.info.name!r}: {exc}. Lower meta_per_class, or choose another "
            "imb_factor."
        ) from None
    splits["train"] = train
    return replace_splits(bundle, splits, aux, transform_options=options.model_dump(exclude_defaults=True), extra=extra)
