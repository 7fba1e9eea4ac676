"""Procedural land and water scenes, generated for a whole batch at once with numpy.

*Land* is a forest: mottled green foliage, brown tree trunks and a strip of earth at the bottom.
*Water* is a lake: sky above a horizon (sometimes a dark far shore), blue water with waves
below. Their colours and textures differ everywhere in the image, so the place is the *easy*
feature a classifier picks up first, as the backgrounds of the real Waterbirds are.

Images are float32 ``(N, 3, H, W)`` in [0, 255] (channels first: numpy's inner loops then run
over whole rows, not over 3 channels); every random draw comes from the given generator, in a
fixed order.
"""

from __future__ import annotations

import numpy as np

MAX_TRUNKS = 5
MAX_CLUTTER = 4


def _resize_matrix(k: int, size: int) -> np.ndarray:
    """``(size, k)`` bilinear interpolation weights from k control points to ``size`` pixels."""
    pos = np.linspace(0.0, k - 1.0, size)
    i0 = np.minimum(pos.astype(np.int64), k - 2)
    w = pos - i0
    matrix = np.zeros((size, k), dtype=np.float32)
    matrix[np.arange(size), i0] = 1 - w
    matrix[np.arange(size), i0 + 1] += w
    return matrix


def smooth_noise(n: int, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Value noise in [0, 1], ``(n, size, size)``: a random k x k grid, upsampled bilinearly."""
    up = _resize_matrix(k, size)
    return np.einsum("yi,nij,xj->nyx", up, rng.random((n, k, k), dtype=np.float32), up, optimize=True)


def _uniform(low: float, high: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """float32 draws: float64 scalars per image would silently promote every pixel array to float64."""
    return rng.uniform(low, high, size=shape).astype(np.float32)


def _uniform_colors(
    n: int, low: tuple[float, float, float], high: tuple[float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """``(n, 3, 1, 1)`` colours, each channel uniform in ``[low, high]``: broadcastable over pixels."""
    return _uniform(low, high, (n, 3), rng)[:, :, None, None]


def land(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Forest scenes: foliage texture, 1 to 5 tree trunks and the ground."""
    rows = np.arange(size, dtype=np.float32)[None, None, :, None]
    cols = np.arange(size, dtype=np.float32)[None, None, None, :]
    dark = _uniform_colors(n, (15, 45, 10), (55, 85, 40), rng)
    light = _uniform_colors(n, (70, 110, 35), (130, 165, 85), rng)
    texture = 0.65 * smooth_noise(n, 6, size, rng) + 0.35 * smooth_noise(n, 16, size, rng)
    image = dark + (light - dark) * texture[:, None]

    count = rng.integers(1, MAX_TRUNKS + 1, size=(n, 1))
    centres = _uniform(0, size, (n, MAX_TRUNKS), rng)
    widths = _uniform(1.5, 5.0, (n, MAX_TRUNKS), rng) * (size / 64)
    active = np.arange(MAX_TRUNKS)[None, :] < count
    trunk = np.zeros((n, 1, 1, size), dtype=bool)
    for k in range(MAX_TRUNKS):  # a handful of vectorised passes, not a loop over images
        near = np.abs(cols - centres[:, k, None, None, None]) < widths[:, k, None, None, None] / 2
        trunk |= near & active[:, k, None, None, None]
    bark = _uniform_colors(n, (55, 35, 18), (105, 70, 45), rng)
    grain = 0.75 + 0.5 * smooth_noise(n, 12, size, rng)[:, None]
    image = np.where(trunk, bark * grain, image)

    ground_level = _uniform(0.72, 0.92, (n, 1, 1, 1), rng) * size
    ground_wave = (smooth_noise(n, 5, size, rng)[:, None, :1, :] - 0.5) * (0.1 * size)  # along x only
    ground = rows > ground_level + ground_wave
    earth = _uniform_colors(n, (85, 65, 35), (135, 105, 65), rng)
    earth_texture = 0.8 + 0.4 * smooth_noise(n, 20, size, rng)[:, None]
    return np.where(ground, earth * earth_texture, image)


def water(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Lake scenes: sky, sometimes a far shore, and wavy water below a horizon."""
    rows = np.arange(size, dtype=np.float32)[None, None, :, None]
    cols = np.arange(size, dtype=np.float32)[None, None, None, :]
    horizon = _uniform(0.12, 0.42, (n, 1, 1, 1), rng) * size
    sky_top = _uniform_colors(n, (120, 160, 195), (180, 205, 240), rng)
    sky_low = _uniform_colors(n, (185, 205, 215), (235, 240, 250), rng)
    t = np.clip(rows / np.maximum(horizon, 1.0), 0.0, 1.0)
    image = sky_top + (sky_low - sky_top) * t  # (n, 3, size, 1): constant along x

    shore_height = _uniform(1.0, 5.0, (n, 1, 1, 1), rng) * (size / 64) * (rng.random((n, 1, 1, 1)) < 0.5)
    shore_top = horizon - shore_height * (0.4 + 0.6 * smooth_noise(n, 8, size, rng)[:, None, :1, :])
    shore = (rows >= shore_top) & (rows < horizon)
    shore_color = _uniform_colors(n, (35, 50, 35), (75, 90, 70), rng)
    image = np.where(shore, shore_color, image)

    deep = _uniform_colors(n, (15, 55, 100), (55, 110, 170), rng)
    shallow = _uniform_colors(n, (50, 110, 150), (100, 160, 210), rng)
    depth = np.clip((rows - horizon) / np.maximum(size - horizon, 1.0), 0.0, 1.0)
    period = _uniform(3.0, 7.0, (n, 1, 1, 1), rng) * (size / 64)
    ripple = _uniform(0.1, 0.5, (n, 1, 1, 1), rng)
    phase = _uniform(0, 2 * np.pi, (n, 2, 1, 1), rng)[:, :, None]
    wobble = ripple * np.sin(2 * np.pi * cols / (4 * period) + phase[:, 0])
    waves = 1.0 + 0.14 * np.sin(2 * np.pi * rows / period + 2 * np.pi * wobble + phase[:, 1])
    tint = 0.85 + 0.3 * smooth_noise(n, 6, size, rng)[:, None]
    lake = (shallow + (deep - shallow) * (1 - depth)) * (waves * tint)
    return np.where(rows >= horizon, lake, image)


def add_clutter(
    images: np.ndarray, palette: np.ndarray, rng: np.random.Generator, max_clutter: int = MAX_CLUTTER
) -> np.ndarray:
    """Paint 0 to ``max_clutter`` ellipses (leaves, stones, flotsam) in ``palette`` colours onto each scene.

    With the birds' own palette this makes "the odd-coloured blob" no detector of the bird, so
    that the class must come from the silhouette. Same distribution on land and water: the
    clutter says nothing about the place either.
    """
    n, _, size, _ = images.shape
    rows = np.arange(size, dtype=np.float32)[None, None, :, None]
    cols = np.arange(size, dtype=np.float32)[None, None, None, :]
    count = rng.integers(0, max_clutter + 1, size=(n, 1))
    centre = _uniform(0, size, (n, max_clutter, 2), rng)
    radius = _uniform(1.0, 5.0, (n, max_clutter, 2), rng) * (size / 64)
    angle = _uniform(0, np.pi, (n, max_clutter), rng)
    colors = palette[rng.integers(0, len(palette), size=(n, max_clutter))]  # (n, K, 3)
    for k in range(max_clutter):
        cos, sin = np.cos(angle[:, k, None, None, None]), np.sin(angle[:, k, None, None, None])
        dx, dy = cols - centre[:, k, 0, None, None, None], rows - centre[:, k, 1, None, None, None]
        u = (dx * cos + dy * sin) / radius[:, k, 0, None, None, None]
        v = (dy * cos - dx * sin) / radius[:, k, 1, None, None, None]
        inside = (u * u + v * v < 1.0) & (k < count)[:, :, None, None]
        images = np.where(inside, colors[:, k, :, None, None], images)
    return images
