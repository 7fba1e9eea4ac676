"""Procedural bird silhouettes: two body plans that differ in shape only.

A *landbird* is a perching songbird: round body, head close on the body (no visible neck), a
short pointed beak, a tail cocked up and thin legs. A *waterbird* is a heron/duck mix:
elongated horizontal body, a long curved neck, a small head with a long flat bill, a flat tail
and webbed feet. Colours come from one palette shared by both classes and are drawn
independently of the class, so colour carries no label information; size, facing direction,
tilt, position and the proportions of every part are randomised so that the class has to be
read from the overall silhouette.

Each bird is drawn as a *part map* (uint8, 0 = background, else a part id) with Pillow at the
output resolution; colouring the parts and compositing onto the background is vectorised.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

BODY, WING, HEAD, BILL, LEGS, EYE = 1, 2, 3, 4, 5, 6
NUM_PARTS = 7  # including 0 = background

# Plumage colours shared by both classes (RGB): dark, light, greys, browns, bright and dull hues.
PLUMAGE = np.array(
    [
        (30, 30, 32),
        (235, 235, 228),
        (128, 128, 134),
        (96, 64, 40),
        (150, 105, 60),
        (196, 170, 120),
        (222, 190, 56),
        (196, 60, 40),
        (226, 128, 40),
        (56, 68, 140),
        (80, 130, 170),
        (84, 120, 64),
    ],
    dtype=np.float32,
)
BILLS = np.array([(20, 20, 20), (240, 160, 30), (230, 210, 80), (120, 110, 100), (200, 70, 50)], dtype=np.float32)


_CIRCLE = {
    k: np.stack([np.cos(t), np.sin(t)], 1) for k in (8, 20) for t in [np.linspace(0, 2 * np.pi, k, endpoint=False)]
}
NUM_SHAPE_DRAWS = 6  # uniforms each body plan consumes
MIN_LENGTH, MAX_LENGTH = 0.15, 0.27  # body length, as a fraction of the image side
NECK_RANGE = (0.55, 0.85)  # waterbird neck: height of the head above the body, in body lengths
MAX_STRETCH = 1.3  # whole-bird aspect jitter: the overall aspect ratio alone does not tell the class
Primitive = tuple[int, bool, np.ndarray, float]  # (part id, is a polygon (else a line), points (K, 2), line width)


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0, k: int = 20) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    unit = _CIRCLE[k]
    return unit @ np.array([[rx * c, rx * s], [-ry * s, ry * c]]) + (cx, cy)


def _between(low: float, high: float, u: float) -> float:
    return low + (high - low) * u


def landbird(u: list[float]) -> list[Primitive]:
    """Parts of a perching bird in body-length units, facing +x, y pointing down; drawn in order.

    ``u`` holds :data:`NUM_SHAPE_DRAWS` uniforms in [0, 1) that set the proportions and pose.
    """
    ry = 0.36 * _between(0.85, 1.15, u[0])
    head_r = 0.2 * _between(0.85, 1.15, u[1])
    beak = _between(0.13, 0.24, u[2])
    tail_up = _between(0.3, 0.55, u[3])
    hx, hy = 0.4, -0.24 - ry * 0.5
    foot = 0.3 + ry
    tail = np.array([(-0.3, -0.08), (-0.3, 0.14), (-0.88, -tail_up + 0.08), (-0.95, -tail_up - 0.05)])
    bill = np.array([(hx + head_r * 0.8, hy - 0.07), (hx + head_r * 0.8, hy + 0.07), (hx + head_r + beak, hy)])
    return [
        (LEGS, False, np.array([(-0.05, 0.2), (-0.08, foot)]), 0.05),
        (LEGS, False, np.array([(0.12, 0.2), (0.14, foot)]), 0.05),
        (LEGS, False, np.array([(-0.2, foot), (0.28, foot)]), 0.04),
        (WING, True, tail, 0.0),
        (BODY, True, _ellipse(0.0, 0.0, 0.5, ry, -_between(10, 30, u[4])), 0.0),
        (WING, True, _ellipse(-0.08, -0.02, 0.32, 0.16, -_between(15, 35, u[5])), 0.0),
        (HEAD, True, _ellipse(hx, hy, head_r, head_r), 0.0),
        (BILL, True, bill, 0.0),
        (EYE, True, _ellipse(hx + head_r * 0.35, hy - head_r * 0.3, 0.045, 0.045, k=8), 0.0),
    ]


def waterbird(u: list[float], neck_range: tuple[float, float] = NECK_RANGE) -> list[Primitive]:
    """Parts of a long-necked water bird, in the same frame and with the same ``u`` as :func:`landbird`.

    ``neck_range``: the head's height above the body, in body lengths; a lower minimum adds
    duck-like birds that look more like a landbird.
    """
    rx = 0.62 * _between(0.9, 1.1, u[0])
    ry = 0.2 * _between(0.85, 1.15, u[1])
    neck = _between(*neck_range, u[2])  # height of the head above the body
    bend = _between(-0.08, 0.12, u[3])
    bill_length = _between(0.28, 0.45, u[4])
    tilt = -_between(0, 10, u[5])
    base_x = rx * 0.7
    hx, hy = base_x + 0.14 + bend, -ry - neck
    neck_line = np.array(
        [(base_x, -0.04), (base_x + 0.18, -ry - neck * 0.35), (base_x + 0.02 - bend, -ry - neck * 0.7), (hx, hy)]
    )
    tip = hx + 0.1 + bill_length
    bill = np.array([(hx + 0.08, hy - 0.05), (tip, hy - 0.01), (tip, hy + 0.03), (hx + 0.08, hy + 0.05)])
    return [
        (LEGS, False, np.array([(0.0, 0.1), (0.0, ry + 0.2)]), 0.05),
        (LEGS, True, np.array([(-0.12, ry + 0.26), (0.14, ry + 0.26), (0.0, ry + 0.16)]), 0.0),
        (WING, True, np.array([(-rx + 0.08, -0.07), (-rx + 0.08, 0.07), (-rx - 0.24, -0.02)]), 0.0),
        (BODY, True, _ellipse(0.0, 0.0, rx, ry, tilt), 0.0),
        (WING, True, _ellipse(-0.1, -0.04, rx * 0.68, ry * 0.6, tilt), 0.0),
        (BODY, False, neck_line, 0.1),
        (HEAD, True, _ellipse(hx, hy, 0.13, 0.1), 0.0),
        (BILL, True, bill, 0.0),
        (EYE, True, _ellipse(hx + 0.02, hy - 0.03, 0.035, 0.035, k=8), 0.0),
    ]


def draw_part_maps(
    labels: np.ndarray,
    rng: np.random.Generator,
    size: int,
    min_length: float = MIN_LENGTH,
    max_length: float = MAX_LENGTH,
    neck_range: tuple[float, float] = NECK_RANGE,
) -> np.ndarray:
    """One part map per label (0 landbird, 1 waterbird): uint8 ``(N, size, size)``.

    Every bird lies wholly inside the image, at a random position, facing left or right, tilted
    by up to 15 degrees, stretched by up to MAX_STRETCH, its body length between ``min_length``
    and ``max_length`` of the image side (the defaults are synthetic-waterbirds version 1's).
    """
    n = len(labels)
    shape_draws = rng.random((n, NUM_SHAPE_DRAWS)).tolist()
    length = size * rng.uniform(min_length, max_length, size=n)
    angle = np.deg2rad(rng.uniform(-15, 15, size=n))
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    stretch = np.exp(rng.uniform(-np.log(MAX_STRETCH), np.log(MAX_STRETCH), size=n))
    where = rng.random((n, 2))
    # points @ linear[i] stretches x, mirrors it (x -> flip * x), rotates by angle and scales by the body length.
    cos, sin = np.cos(angle) * length, np.sin(angle) * length
    sx, sy = flip * stretch**0.5, stretch**-0.5
    linear = np.stack([np.stack([sx * cos, sx * sin], 1), np.stack([-sy * sin, sy * cos], 1)], 1)
    maps = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        parts = waterbird(shape_draws[i], neck_range) if labels[i] == 1 else landbird(shape_draws[i])
        points = np.concatenate([pts for _, _, pts, _ in parts]) @ linear[i]
        margin = max(width for *_, width in parts) * length[i] / 2 + 1
        low, high = points.min(axis=0) - margin, points.max(axis=0) + margin
        points += -low + where[i] * np.maximum(size - (high - low), 0.0)
        flat = points.ravel().tolist()
        image = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(image)
        start = 0
        for part, polygon, pts, width in parts:
            xy = flat[2 * start : 2 * (start + len(pts))]
            start += len(pts)
            if polygon:
                draw.polygon(xy, fill=part)
            else:
                draw.line(xy, fill=part, width=max(1, round(width * length[i])), joint="curve")
        maps[i] = np.asarray(image)
    return maps


def part_colors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-image colour of every part id, float32 ``(N, NUM_PARTS, 3)``; independent of the class."""
    colors = np.zeros((n, NUM_PARTS, 3), dtype=np.float32)
    body = PLUMAGE[rng.integers(0, len(PLUMAGE), size=n)]
    other = PLUMAGE[rng.integers(0, len(PLUMAGE), size=n)]
    shade = rng.uniform(0.55, 0.85, size=(n, 1))
    colors[:, BODY] = body
    colors[:, WING] = np.where(rng.random((n, 1)) < 0.5, other, body * shade)
    colors[:, HEAD] = np.where(rng.random((n, 1)) < 0.7, body, PLUMAGE[rng.integers(0, len(PLUMAGE), size=n)])
    colors[:, BILL] = BILLS[rng.integers(0, len(BILLS), size=n)]
    colors[:, LEGS] = BILLS[rng.integers(0, len(BILLS), size=n)] * 0.8
    colors[:, EYE] = np.where(body.mean(axis=1, keepdims=True) < 70, 230.0, 10.0)
    return colors
