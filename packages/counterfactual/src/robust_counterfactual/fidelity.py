"""Fidelity guards: a method never silently becomes something else.

A method whose paper needs something the data may lack (CFGen's and CLP's foreground masks)
checks for it when it is built. Without it the run is refused with one paragraph that says
what is missing and how to give it, unless the user opted out explicitly; an opt-out is recorded
(:meth:`robust.method.MethodContext.record_opt_out`) in ``summary.json`` under ``opt_outs``, so
that ``robust report`` marks the run and ``--against-paper`` does not compare it with the paper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robust.api import ArraySplit, ConfigError, Split

if TYPE_CHECKING:
    from robust.api import MethodContext

ALLOW_NO_MASKS = "allow_no_masks"
ALLOW_NO_MASKS_HELP = (
    "Run without foreground masks when the dataset has none (the method's mask-based parts off). Recorded in "
    "summary.json as an opt-out: robust report marks the run and does not compare it with the paper."
)


def split_has_foreground(split: Split) -> bool:
    """Whether batches of ``split`` carry a foreground: masks (the dataset's or a provider's) or boxes."""
    if split.bboxes is not None:
        return True
    if isinstance(split, ArraySplit):
        return split.masks is not None
    from robust_counterfactual.masks import ProviderMaskedSplit

    if isinstance(split, ProviderMaskedSplit):
        return True
    # A streamed split says whether it has masks only by reading; ask its first image.
    return len(split) > 0 and split.read(0)[1] is not None  # type: ignore[attr-defined]


def require_foreground(
    ctx: MethodContext, *, method: str, needs: str, splits: dict[str, Split], allow_no_masks: bool
) -> bool:
    """True when every split in ``splits`` (``{"training set": split, ...}``) has a foreground.

    When one lacks it: a :class:`ConfigError` naming the dataset and the three ways forward, or,
    under ``allow_no_masks``, False and an opt-out recorded for the run. ``needs`` says what the
    masks are for ("its counterfactual and factual images and the saliency penalty").
    """
    missing = [where for where, split in splits.items() if not split_has_foreground(split)]
    if not missing:
        return True
    dataset = ctx.config.dataset_name
    lacking = " and ".join(missing)
    verb = "have" if len(missing) > 1 else "has"
    if not allow_no_masks:
        raise ConfigError(
            f"{method} needs foreground masks for {needs}, and the {lacking} of dataset {dataset!r} {verb} none. "
            "Give them in one of three ways: use a dataset that ships masks or boxes (its options may name where "
            "they are, e.g. --set dataset.masks_dir=DIR; see `robust info "
            f"{dataset}`); compute them with a registered mask provider, --set dataset.mask_provider=NAME "
            "(`robust list mask-providers`, e.g. deeplabv3); or run without them, knowing that this is not the "
            f"paper's method, with --set {ALLOW_NO_MASKS}=true (recorded in summary.json; robust report marks the "
            "run and does not compare it with the paper)."
        )
    ctx.record_opt_out(ALLOW_NO_MASKS, f"no foreground masks in the {lacking} of {dataset!r}: {needs} off")
    return False
