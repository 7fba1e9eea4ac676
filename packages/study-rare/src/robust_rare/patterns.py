"""The study's spurious patterns, on stored pixels (uint8 ``(N, C, H, W)``, grey or colour).

The reference works on float images in [0, 1] (``spurious_ml/datasets``): a pattern sets pixels to
1 or adds noise and clips. Here 1 is 255 and the noise is added in [0, 1] units, then rounded back
to uint8 (at most half a grey level from the reference's float). Rows first, then columns, (0, 0)
the top-left corner. Paper names and code names:

| paper | code | pattern |
|---|---|---|
| s1 | v1 | the pixel (0, 0) white |
| s2 | v3 | the 3 × 3 top-left block white |
| s3 | v8 | the 5 × 5 top-left block white |
| r1, r2, r3 | v18, v19, v20 | + 0.25 / 0.5 / 1.0 · u, clipped; u ~ U[0, 1) one fixed image from RandomState(seed) |
| core | v30 | a vertical bar, rows 3-24 × columns 13-15, white |

The random pattern ``u`` is drawn once per seed with the image's own shape (height, width,
channels, as the reference's ``rand(H, W, C)``), so the same seed gives the same pattern at
training and at test time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robust.api import ConfigError

PAPER_NAMES = {"s1": "v1", "s2": "v3", "s3": "v8", "r1": "v18", "r2": "v19", "r3": "v20", "core": "v30"}
SMALL = {"v1": 1, "v3": 3, "v8": 5}
RANDOM = {"v18": 0.25, "v19": 0.5, "v20": 1.0}
CORE_ROWS, CORE_COLS = (3, 25), (13, 16)
PATTERNS = (*SMALL, *RANDOM, "v30")


def canonical(name: str) -> str:
    """The code name (``v8``) of a pattern given by its code or paper name (``s3``)."""
    code = PAPER_NAMES.get(name, name)
    if code not in PATTERNS:
        raise ConfigError(
            f"Unknown spurious pattern {name!r}: expected one of the study's code names {', '.join(PATTERNS)} or "
            f"paper names {', '.join(PAPER_NAMES)} (s1-s3 small, r1-r3 random, core)."
        )
    return code


def random_pattern(shape: tuple[int, int, int], seed: int) -> Tensor:
    """The fixed noise image ``u`` of a seed, ``(C, H, W)`` in [0, 1) (drawn as ``rand(H, W, C)``)."""
    c, h, w = shape
    u = np.random.RandomState(seed).rand(h, w, c)
    return torch.from_numpy(u).permute(2, 0, 1).float()


def apply_pattern(images: Tensor, pattern: str, seed: int = 0) -> Tensor:
    """``images`` (uint8 ``(N, C, H, W)``) with ``pattern`` applied to every one (a new tensor)."""
    code = canonical(pattern)
    out = images.clone()
    h, w = images.shape[-2:]
    if code in SMALL:
        k = SMALL[code]
        _check_size(code, (h, w), (k, k))
        out[..., :k, :k] = 255
        return out
    if code == "v30":
        _check_size(code, (h, w), (CORE_ROWS[1], CORE_COLS[1]))
        out[..., CORE_ROWS[0] : CORE_ROWS[1], CORE_COLS[0] : CORE_COLS[1]] = 255
        return out
    noise = RANDOM[code] * random_pattern(tuple(images.shape[1:]), seed)
    return (images.float() / 255 + noise).clamp(0, 1).mul(255).round().to(torch.uint8)


def _check_size(code: str, size: tuple[int, int], needed: tuple[int, int]) -> None:
    if size[0] < needed[0] or size[1] < needed[1]:
        raise ConfigError(
            f"Pattern {code} needs images of at least {needed[0]} × {needed[1]} pixels; these are {size[0]} × "
            f"{size[1]}. Use a small or random pattern, or larger images."
        )


@dataclass(frozen=True)
class Pattern:
    """One pattern with its seed, as a picklable callable (streamed splits read in worker processes)."""

    name: str
    seed: int = 0

    def __call__(self, images: Tensor) -> Tensor:
        return apply_pattern(images, self.name, self.seed)
