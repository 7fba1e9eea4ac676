"""Infill operators ("inpainters"): replace part of an image, keep the rest bit for bit.

Shared by the counterfactual/factual augmentations of CFGen (Chang et al., "Towards Robust
Classification Model by Counterfactual and Invariant Data Generation", CVPR 2021; reference
zzzace2000/robust_cls_model, ``arch/inpainting/Baseline.py`` and ``AdvInpainting.py``) and of CLP
(whose ``infilling/Baseline.py`` is a copy of CFGen's).

Conventions
-----------
* ``x`` is a batch of NORMALISED images ``(N, C, H, W)``: pixel = ``x * std + mean``.
* ``keep`` is a float mask ``(N, 1, H, W)`` with values in {0, 1}: 1 = keep the pixel, 0 = fill it.
  A counterfactual (CF) image passes ``keep = 1 - rectangle_mask(foreground)`` (the object's box is
  filled); a factual (F) image passes ``keep = foreground`` (the background is filled).
* Every operator has the signature ``op(x, keep, ctx, **options) -> Tensor`` and returns
  ``x * keep + fill * (1 - keep)``. It is computed as ``torch.where(keep > 0.5, x, fill)``, the same
  value for a binary mask but exact: kept pixels are bit-identical to ``x`` (also for ``-0.0`` and
  whatever the fill holds).
* All randomness is drawn from ``ctx.generator`` (a ``torch.Generator`` on ``x.device``; None = torch's
  global generator), so augmentations are reproducible and resumable.
* ``none`` is not an operator: callers skip the augmentation. :data:`INFILL_NAMES_CF` and
  :data:`INFILL_NAMES_F` are the option values of the counterfactual and factual infills.

Operators are registered in the ``infill`` registry kind (hook ``register_infills``); look them up
with :func:`apply_infill` so that plugins can add their own.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust.api import ConfigError

INFILL_NAMES_CF: tuple[str, ...] = ("none", "mean", "random", "shuffle", "tile", "cagan")
"""Counterfactual infills (the object's rectangle is filled; label "not y"), CFGen's ``--inpaint``."""

INFILL_NAMES_F: tuple[str, ...] = ("none", "random", "shuffle", "mrand", "fgsm", "mean", "tile")
"""Factual infills (the background is filled; label y), CFGen's ``--f_inpaint``."""

InfillFn = Callable[..., Tensor]


@dataclass
class InfillContext:
    """What an operator may need besides the images and the mask."""

    mean: Tensor
    """``(1, C, 1, 1)`` dataset normalisation mean, on ``x``'s device."""
    std: Tensor
    """``(1, C, 1, 1)`` dataset normalisation std."""
    generator: torch.Generator | None = None
    """Source of all randomness (on ``x.device``); None = torch's global generator."""
    labels: Tensor | None = None
    """``(N,)`` int64 labels; needed by ``mrand`` and ``fgsm``."""
    model: Callable[[Tensor], Tensor] | None = None
    """Logits function; needed by ``fgsm``."""
    precomputed: Tensor | None = None
    """``(N, C, H, W)`` normalised pre-computed counterfactual images; needed by ``cagan``."""
    module: nn.Module | None = None
    """Module put in eval mode during ``fgsm``'s attack (its modes are restored afterwards). When None,
    ``model`` itself (an ``nn.Module``) or the module a bound ``model`` method belongs to is used."""

    @classmethod
    def from_stats(
        cls,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        **fields: Any,
    ) -> InfillContext:
        """A context from per-channel statistics such as ``DatasetInfo.mean`` / ``DatasetInfo.std``."""

        def as_tensor(values: Sequence[float]) -> Tensor:
            return torch.tensor(list(values), device=device, dtype=dtype).view(1, -1, 1, 1)

        return cls(as_tensor(mean), as_tensor(std), **fields)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def has_foreground(mask: Tensor) -> Tensor:
    """``(N,)`` bool: whether each image's mask has any non-zero pixel."""
    return mask.reshape(mask.shape[0], -1).ne(0).any(dim=1)


def _span(flags: Tensor) -> Tensor:
    """Along the last dim, True from the first to the last True (all False when there is none)."""
    return flags.cumsum(-1).gt(0) & flags.flip(-1).cumsum(-1).flip(-1).gt(0)


def rectangle_mask(mask: Tensor) -> Tensor:
    """``(N, 1, H, W)``: 1 inside the tight bounding rectangle of each image's non-zero mask region.

    The reference's ``make_masks_as_rectangular``: CF images fill the object's box rather than its
    silhouette, so that the shape of the object does not leak into the counterfactual. An empty
    mask gives zeros (the reference crashes there). Channels are merged (a pixel counts when any
    channel is non-zero). The result has ``mask``'s dtype when floating point, else float32.
    """
    if mask.ndim != 4:
        raise ValueError(f"rectangle_mask expects an (N, C, H, W) mask, got shape {tuple(mask.shape)}")
    region = mask.ne(0).any(dim=1)  # (N, H, W)
    rows = _span(region.any(dim=2))  # (N, H)
    cols = _span(region.any(dim=1))  # (N, W)
    dtype = mask.dtype if mask.dtype.is_floating_point else torch.float32
    return (rows[:, :, None] & cols[:, None, :])[:, None].to(dtype)


def boxes_to_mask(bbox: Tensor, height: int, width: int) -> Tensor:
    """``(N, 1, H, W)`` float: 1 inside each image's box ``(x0, y0, x1, y1)`` (end exclusive).

    For datasets that annotate boxes rather than silhouettes (CCT, IN-9 with ``--mask bbox``): the
    reference's ``generate_mask``. An empty box (x1 <= x0 or y1 <= y0) gives an empty mask.
    """
    bbox = bbox.long()
    rows = torch.arange(height, device=bbox.device)
    cols = torch.arange(width, device=bbox.device)
    inside_rows = (rows[None] >= bbox[:, 1:2]) & (rows[None] < bbox[:, 3:4])  # (N, H)
    inside_cols = (cols[None] >= bbox[:, 0:1]) & (cols[None] < bbox[:, 2:3])  # (N, W)
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None].float()


def _keep_bool(x: Tensor, keep: Tensor) -> Tensor:
    """Check the shapes and binarise the keep mask (``keep > 0.5``)."""
    if x.ndim != 4:
        raise ValueError(f"infill expects images (N, C, H, W), got shape {tuple(x.shape)}")
    if (
        keep.ndim != 4
        or keep.shape[0] != x.shape[0]
        or keep.shape[2:] != x.shape[2:]
        or keep.shape[1] not in (1, x.shape[1])
    ):
        raise ValueError(
            f"infill expects a keep mask (N, 1, H, W) matching the images {tuple(x.shape)}, got {tuple(keep.shape)}"
        )
    if keep.dtype == torch.bool:
        return keep
    return keep > 0.5


def _blend(x: Tensor, keep: Tensor, fill: Tensor) -> Tensor:
    """``x * keep + fill * (1 - keep)`` for a binary mask, with kept pixels bit-identical to ``x``."""
    return torch.where(keep, x, fill.to(x.dtype))


def _require(ctx: InfillContext | None, field: str, op: str) -> Any:
    value = None if ctx is None else getattr(ctx, field)
    if value is None:
        raise ValueError(f"the {op!r} infill needs InfillContext.{field}")
    return value


def _longest_run(flags: Tensor) -> tuple[Tensor, Tensor]:
    """Start and length of the longest run of True along dim 1 of ``(N, L)`` (the first of equals).

    Length 0 (start 0) when a row has no True.
    """
    length = flags.shape[1]
    idx = torch.arange(length, device=flags.device).expand_as(flags)
    last_false = torch.where(flags, torch.full_like(idx, -1), idx).cummax(dim=1).values
    run_end_here = torch.where(flags, idx - last_false, torch.zeros_like(idx))
    best, end = run_end_here.max(dim=1)  # max returns the first index of the maximum
    start = torch.where(best > 0, end - best + 1, torch.zeros_like(end))
    return start, best


# ---------------------------------------------------------------------------------------------
# Operators
# ---------------------------------------------------------------------------------------------


def mean_infill(x: Tensor, keep: Tensor, ctx: InfillContext | None = None) -> Tensor:
    """Fill with 0 in normalised space: the dataset mean colour (grey for mean = std = 0.5).

    The reference's ``MeanInpainter`` (``x * mask``).
    """
    keep_b = _keep_bool(x, keep)
    return _blend(x, keep_b, torch.zeros_like(x))


def random_infill(x: Tensor, keep: Tensor, ctx: InfillContext | None = None, *, noise_std: float = 0.2) -> Tensor:
    """Fill with a random colour plus noise (the reference's ``RandomColorWithNoiseInpainter``).

    Per image a colour ``c ~ U[0, 1]^C`` (constant over space), plus per-pixel ``N(0, noise_std^2)``
    noise, clamped to ``[0, 1]`` in PIXEL space, then normalised with ``ctx.mean`` / ``ctx.std``.
    """
    keep_b = _keep_bool(x, keep)
    mean, std = _require(ctx, "mean", "random"), _require(ctx, "std", "random")
    gen = ctx.generator if ctx is not None else None
    n, c, h, w = x.shape
    colour = torch.rand(n, c, 1, 1, generator=gen, device=x.device)
    noise = torch.randn(n, c, h, w, generator=gen, device=x.device) * noise_std
    pixel = (colour + noise).clamp_(0.0, 1.0)
    fill = (pixel - mean.to(pixel)) / std.to(pixel)
    return _blend(x, keep_b, fill)


def shuffle_infill(x: Tensor, keep: Tensor, ctx: InfillContext | None = None) -> Tensor:
    """Fill with a random permutation of ALL values of the batch (the reference's ``ShuffleInpainter``).

    The permutation runs across images, channels and pixels (not per image or per channel): the
    fill is an i.i.d.-like resample of the batch's intensity values.
    """
    keep_b = _keep_bool(x, keep)
    gen = ctx.generator if ctx is not None else None
    perm = torch.randperm(x.numel(), generator=gen, device=x.device)
    fill = x.reshape(-1)[perm].reshape(x.shape)
    return _blend(x, keep_b, fill)


def _tiled_strips(x: Tensor, background: Tensor) -> Tensor:
    """Per image, the longest full-background horizontal or vertical strip tiled to the image size.

    ``background`` is ``(N, H, W)`` bool. Zeros for an image with no full-background row or column.
    """
    h, w = x.shape[-2:]
    row_start, row_len = _longest_run(background.all(dim=2))  # rows entirely background
    col_start, col_len = _longest_run(background.all(dim=1))  # columns entirely background
    fill = torch.zeros_like(x)
    runs = zip(row_start.tolist(), row_len.tolist(), col_start.tolist(), col_len.tolist(), strict=True)
    for i, (rs, rl, cs, cl) in enumerate(runs):
        if rl == 0 and cl == 0:
            continue  # no strip (no background at all, or none spanning the image): zeros
        if rl >= cl:  # ties -> rows, as the reference
            strip = x[i, :, rs : rs + rl, :].repeat(1, math.ceil(h / rl), 1)
        else:
            strip = x[i, :, :, cs : cs + cl].repeat(1, 1, math.ceil(w / cl))
        fill[i] = strip[:, :h, :w]
    return fill


def tile_infill(x: Tensor, keep: Tensor, ctx: InfillContext | None = None, *, use_bbox_to_mask: bool = False) -> Tensor:
    """Fill with the longest background strip, tiled (the reference's ``TileInpainter``).

    Per image, from the keep mask (its first channel): the longest contiguous run of rows that are
    entirely kept (background) and the longest of such columns; the longer strip (ties -> rows) is
    repeated to cover the image and cropped, and fills the pixels to fill. Degenerate cases: no
    full-background row or column (in particular nothing to keep) -> fill with zeros (the mean
    colour); nothing to fill -> ``x`` unchanged; a strip in one direction only -> that one.

    ``use_bbox_to_mask=True``: the region filled becomes the bounding rectangle of the fill region
    (the whole object's box is overwritten), as the reference uses inside ``mrand`` and for CF with
    segmentation masks.
    """
    keep_b = _keep_bool(x, keep)
    background = keep_b[:, 0]
    fill = _tiled_strips(x, background)
    if use_bbox_to_mask:
        keep_b = rectangle_mask((~background)[:, None]) == 0
    return _blend(x, keep_b, fill)


def mrand_infill(x: Tensor, keep: Tensor, ctx: InfillContext | None = None) -> Tensor:
    """Factual "mixed-rand": the object on the tiled background of an image of another class.

    The reference's ``FactualMixedRandomTileInpainter``. ``keep`` is the foreground. Every image's
    background is built by tiling over its object's bounding box (``tile_infill`` with
    ``use_bbox_to_mask=True`` on the background, so no silhouette is left); then each image takes
    the background of an image drawn uniformly (from ``ctx.generator``) among the batch's images
    WITH A DIFFERENT LABEL (``ctx.labels``). An image without any such partner gets the mean colour
    (0) as background, as the reference does for a batch of one image or one class.
    """
    keep_b = _keep_bool(x, keep)
    labels = _require(ctx, "labels", "mrand").to(x.device)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"mrand expects labels of shape ({x.shape[0]},), got {tuple(labels.shape)}")
    backgrounds = tile_infill(x, (~keep_b[:, :1]).to(x.dtype), use_bbox_to_mask=True)
    differ = labels[:, None] != labels[None, :]  # (N, N): j is a valid partner of i
    valid = differ.any(dim=1)
    weights = torch.where(valid[:, None], differ, torch.ones_like(differ)).to(torch.float32)
    partner = torch.multinomial(weights, 1, generator=ctx.generator).squeeze(1)
    fill = torch.where(valid[:, None, None, None], backgrounds[partner], torch.zeros_like(x))
    return _blend(x, keep_b, fill)


def _module_of(ctx: InfillContext) -> nn.Module | None:
    if ctx.module is not None:
        return ctx.module
    if isinstance(ctx.model, nn.Module):
        return ctx.model
    owner = getattr(ctx.model, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def fgsm_infill(
    x: Tensor,
    keep: Tensor,
    ctx: InfillContext | None = None,
    *,
    eps: float = 0.6,
    alpha: float | None = None,
    clip: tuple[float, float] | None = None,
) -> Tensor:
    """Factual adversarial background: one FGSM step with a random start (the reference's ``AdvInpainting``).

    ``delta0 ~ U[-eps, eps]``; one signed-gradient ASCENT step of size ``alpha`` (None ->
    ``1.25 * eps``, the reference's 0.75 for eps 0.6) on the sum-reduced cross-entropy of
    ``ctx.model(x + delta)`` with ``ctx.labels``; ``delta`` clipped to ``[-eps, eps]``, then so that
    ``x + delta`` stays a valid image; ``delta`` set to 0 where ``keep == 1`` (the foreground).
    ``eps`` and ``alpha`` are in normalised units.

    Valid range: the reference clips ``x + delta`` to ``[-1, 1]`` because it normalises with mean =
    std = 0.5, where ``[-1, 1]`` is the pixel range ``[0, 1]``. Here ``clip=None`` (the default)
    computes the pixel range per channel from ``ctx.mean`` / ``ctx.std``: ``lo = (0 - mean) / std``,
    ``hi = (1 - mean) / std``, which is the reference's ``[-1, 1]`` under its normalisation and right
    under any other. ``clip=(lo, hi)`` clamps to those normalised values instead (``(-1.0, 1.0)``
    reproduces the reference literally).

    The attack runs with the module in eval mode (every submodule's mode is restored afterwards)
    and takes the gradient with respect to ``delta`` only (``torch.autograd.grad``): the model's
    parameters receive no gradient. The result is detached.
    """
    keep_b = _keep_bool(x, keep)
    model = _require(ctx, "model", "fgsm")
    labels = _require(ctx, "labels", "fgsm").to(x.device)
    assert ctx is not None
    step = 1.25 * eps if alpha is None else alpha
    x0 = x.detach()
    if clip is None:
        mean, std = _require(ctx, "mean", "fgsm").to(x0), _require(ctx, "std", "fgsm").to(x0)
        lo, hi = (0.0 - mean) / std, (1.0 - mean) / std
    else:
        lo, hi = torch.tensor(clip[0]).to(x0), torch.tensor(clip[1]).to(x0)

    delta = (torch.rand(x0.shape, generator=ctx.generator, device=x0.device) * 2 - 1).mul_(eps).to(x0.dtype)
    delta.requires_grad_(True)
    module = _module_of(ctx)
    modes = [(m, m.training) for m in module.modules()] if module is not None else []
    try:
        if module is not None:
            module.eval()
        with torch.enable_grad():
            loss = F.cross_entropy(model(x0 + delta), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
    finally:
        for m, training in modes:
            m.training = training
    delta = (delta.detach() + step * grad.sign()).clamp_(-eps, eps)
    delta = torch.maximum(torch.minimum(hi - x0, delta), lo - x0)
    return _blend(x0, keep_b, x0 + delta).detach()


def cagan_infill(x: Tensor, keep: Tensor, ctx: InfillContext | None = None) -> Tensor:
    """Fill with pre-computed counterfactual images (CFGen's CAGAN images, loaded from disk).

    ``ctx.precomputed`` holds the normalised CA-GAN (Yu et al. 2018) images in which the object's box
    was inpainted; the kept pixels stay those of ``x``.
    """
    keep_b = _keep_bool(x, keep)
    precomputed = None if ctx is None else ctx.precomputed
    if precomputed is None:
        raise ConfigError(
            "The 'cagan' infill needs pre-computed CAGAN counterfactual images, and this batch has none: "
            "the dataset must provide precomputed CAGAN images (CFGen's fetch scripts download them for "
            "Waterbirds and IN-9). Choose another infill (mean, random, shuffle, tile) for this dataset."
        )
    if precomputed.shape != x.shape:
        raise ValueError(
            f"cagan: precomputed images {tuple(precomputed.shape)} do not match the batch {tuple(x.shape)}"
        )
    return _blend(x, keep_b, precomputed.to(device=x.device, dtype=x.dtype))


# ---------------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------------


def get_infill(name: str) -> InfillFn:
    """The registered operator called ``name`` (``robust list infills``)."""
    if name == "none":
        raise ValueError("'none' is not an infill operator: skip the augmentation instead of calling it")
    from robust.api import get_registry

    return get_registry().get("infill", name).load()


def apply_infill(name: str, x: Tensor, keep: Tensor, ctx: InfillContext | None = None, **options: Any) -> Tensor:
    """Look the operator up in the registry and apply it: ``op(x, keep, ctx, **options)``.

    Unknown names raise :class:`robust.errors.UnknownNameError`; options the operator does not
    accept raise :class:`robust.errors.ConfigError`.
    """
    op = get_infill(name)
    try:
        inspect.signature(op).bind(x, keep, ctx, **options)
    except TypeError as exc:
        params = [p for p in list(inspect.signature(op).parameters)[3:] if p not in ("args", "kwargs")]
        raise ConfigError(
            f"The infill {name!r} does not accept the options {sorted(options)} ({exc}); "
            f"its options are: {', '.join(params) or 'none'}."
        ) from exc
    return op(x, keep, ctx, **options)
