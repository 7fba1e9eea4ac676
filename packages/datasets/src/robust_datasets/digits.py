"""Procedural handwriting-like digits: a small bank of font glyphs, warped per sample.

Rendering text with Pillow is the slow part, so it is done only once per (digit, stroke width):
each glyph is drawn upright at twice the output resolution with Pillow's built-in scalable font.
Every sample then gets its own random affine jitter (rotation, scale, shear, translation) and a
smooth elastic displacement, applied to the whole batch at once with torch's ``grid_sample``.
Varying the pose and the stroke keeps the digit shape the *harder* cue to learn, as MNIST
handwriting is in Colored MNIST. The pixels depend on Pillow's embedded font, so another Pillow
release may draw slightly different digits from the same seed.

This module imports torch: the dataset modules import it only when they generate.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

SUPERSAMPLE = 2  # glyphs are drawn at twice the output resolution, then sampled bilinearly
STROKE_WIDTHS = (0, 1, 2, 3)  # at the supersampled resolution
DIGIT_HEIGHT = 0.68  # digit height as a fraction of the image side (MNIST: 20 of 28 pixels)
CHUNK = 2048  # samples warped at once (bounds temporary memory)


@functools.lru_cache(maxsize=4)
def glyph_bank(size: int) -> np.ndarray:
    """Upright glyphs, float32 in [0, 1], shape ``(10, len(STROKE_WIDTHS), S, S)`` with ``S = 2 * size``.

    Needs Pillow >= 10.1, whose ``load_default(size=...)`` is a scalable FreeType font; the old
    fixed 11-pixel bitmap font would give blocky digits.
    """
    side = size * SUPERSAMPLE
    probe = ImageFont.load_default(size=100)
    _, top, _, bottom = probe.getbbox("0123456789")
    font = ImageFont.load_default(size=max(4, round(100 * DIGIT_HEIGHT * side / (bottom - top))))
    bank = np.zeros((10, len(STROKE_WIDTHS), side, side), dtype=np.float32)
    for digit in range(10):
        for k, stroke in enumerate(STROKE_WIDTHS):
            image = Image.new("L", (side, side), 0)
            draw = ImageDraw.Draw(image)
            draw.text(
                (side / 2, side / 2), str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255
            )
            bank[digit, k] = np.asarray(image, dtype=np.float32) / 255.0
    return bank


def render_digits(digits: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Grey digit images, uint8 ``(N, size, size)``, one random pose and stroke per sample.

    All random draws come from ``rng`` in a fixed order, so the images are a pure function of
    the generator's state and the requested digits (torch's CPU sampling is deterministic).
    """
    digits = np.asarray(digits, dtype=np.int64)
    n = digits.shape[0]
    bank = torch.from_numpy(glyph_bank(size))
    strokes = rng.integers(0, len(STROKE_WIDTHS), size=n)
    angle = np.deg2rad(rng.uniform(-15.0, 15.0, size=n))
    scale = rng.uniform(0.8, 1.15, size=n)
    aspect = rng.uniform(0.85, 1.15, size=n)
    shear = rng.uniform(-0.3, 0.3, size=n)
    shift = rng.uniform(-0.2, 0.2, size=(n, 2))  # in normalised coordinates, [-1, 1] across the image
    coarse = rng.normal(0.0, 0.07, size=(n, 2, 4, 4))  # elastic displacement control points, normalised
    # Source coordinates of every output pixel = affine part + bilinear elastic part, both linear
    # in per-sample coefficients: one batched matmul against a fixed basis builds every grid.
    coef = torch.cat(
        [
            torch.from_numpy(_inverse_affine(angle, scale, aspect, shear, shift)).float().transpose(1, 2),
            torch.from_numpy(coarse).float().reshape(n, 2, -1).transpose(1, 2),
        ],
        dim=1,
    )
    basis = _grid_basis(size, coarse.shape[-1])
    out = torch.empty((n, size, size), dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        part = slice(start, min(start + CHUNK, n))
        glyphs = bank[torch.from_numpy(digits[part]), torch.from_numpy(strokes[part])].unsqueeze(1)
        grid = torch.matmul(basis, coef[part]).view(-1, size, size, 2)
        warped = F.grid_sample(glyphs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[part] = (warped[:, 0] * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out.numpy()


def _grid_basis(side: int, k: int) -> torch.Tensor:
    """``(side * side, 3 + k * k)``: per output pixel, ``x, y, 1`` and its bilinear weights on a k x k grid."""
    axis = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1  # pixel centres, align_corners=False
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    pos = torch.linspace(0, k - 1, side)
    i0 = pos.floor().clamp(max=k - 2).long()
    w = pos - i0
    weights = torch.zeros(side, k)
    rows = torch.arange(side)
    weights[rows, i0] = 1 - w
    weights[rows, i0 + 1] += w
    control = torch.einsum("yi,xj->yxij", weights, weights).reshape(side * side, k * k)
    return torch.cat([gx.reshape(-1, 1), gy.reshape(-1, 1), torch.ones(side * side, 1), control], dim=1)


def _inverse_affine(
    angle: np.ndarray, scale: np.ndarray, aspect: np.ndarray, shear: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """``(N, 2, 3)`` matrices mapping output to source coordinates (what ``affine_grid`` wants).

    The forward pose scales (anisotropically), shears, rotates, then translates the glyph; the
    sampler needs its inverse: undo the translation, then the rotation, shear and scale.
    """
    cos, sin = np.cos(angle), np.sin(angle)
    sx, sy = scale * aspect, scale / aspect
    linear = np.empty((len(angle), 2, 2))
    linear[:, 0, 0] = (cos + shear * sin) / sx
    linear[:, 0, 1] = (sin - shear * cos) / sx
    linear[:, 1, 0] = -sin / sy
    linear[:, 1, 1] = cos / sy
    offset = -np.einsum("nij,nj->ni", linear, shift)
    return np.concatenate([linear, offset[:, :, None]], axis=2)
