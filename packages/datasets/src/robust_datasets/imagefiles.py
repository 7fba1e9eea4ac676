"""Splits backed by image files: decoded with PIL, resized to the model's input size.

Small splits are decoded once into an :class:`ArraySplit` (then batched on the device); large ones
stay an :class:`ImageFileSplit` that DataLoader workers decode batch by batch. A corrupt or
unreadable file is a ``DataError`` naming the file, never a PIL traceback, nor (from a DataLoader
worker) torch's copy of the worker's traceback (:class:`ImageFileError`).

Images of more than 8 bits are scaled by their real range instead of clipped (PIL's
``convert("RGB")`` clips a 16-bit or float image to 0..255, leaving it near-constant): 16-bit
integers are divided by 257, floats in [0, 1] multiplied by 255; floats outside [0, 1] (no known
range), NaN, or 32-bit integers above 65535 are refused. Images over PIL's decompression-bomb
limit (``PIL.Image.MAX_IMAGE_PIXELS`` pixels) are refused before they are decoded.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from robust.api import ArraySplit, DataError, StreamSplit

# We refuse such images ourselves, with the file's name (see decode_image); PIL's warning would only
# repeat it without the name, once per worker.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageFileError(DataError):
    """A bad image file. Raised in a DataLoader worker, torch re-raises the class in the main process
    with the worker's whole traceback as its message; this keeps the one paragraph it had."""

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:  # torch's ExceptionWrapper.reraise: the last line is ours
            last = message.strip().splitlines()[-1]
            message = last.split(": ", 1)[1] if last.startswith(f"{__name__}.") and ": " in last else last
        super().__init__(message)


@dataclass(frozen=True)
class Resize:
    """Optional centre crop to a square of ``center_crop`` pixels, then resize to ``size`` x ``size``.

    CelebA's protocol (group_DRO) is ``center_crop=178`` then 224; most datasets just resize.
    """

    size: int
    center_crop: int | None = None

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.center_crop is not None:
            w, h = image.size
            side = min(self.center_crop, w, h)
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BILINEAR)
        return image


@dataclass(frozen=True)
class FractionCrop(Resize):
    """Keep the central ``fraction`` of the image, then resize to ``size`` x ``size`` (one resampling).

    ``per_side=True``: the central fraction of the width and of the height, as torchvision's
    ``Resize((S/f, S/f))`` then ``CenterCrop(S)``. ``per_side=False``: a centred square of side
    ``fraction`` × the shorter side, as ``Resize(S/f)`` (shorter side) then ``CenterCrop(S)``.
    """

    fraction: float = 1.0
    per_side: bool = True

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if self.per_side:
            crop_w, crop_h = width * self.fraction, height * self.fraction
        else:
            crop_w = crop_h = min(width, height) * self.fraction
        if (crop_w, crop_h) == (width, height) == (self.size, self.size):
            return image
        box = ((width - crop_w) / 2, (height - crop_h) / 2, (width + crop_w) / 2, (height + crop_h) / 2)
        return image.resize((self.size, self.size), Image.BILINEAR, box=box)


def decode_image(path: Path, resize: Resize, mode: str = "RGB") -> np.ndarray:
    """``path`` as uint8 ``(H, W, C)`` after ``resize``; an :class:`ImageFileError` naming the file when it
    is missing, corrupt, a decompression bomb or of a depth with no known range."""
    try:
        with Image.open(path) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                raise Image.DecompressionBombError(
                    f"{image.width}x{image.height} ({image.width * image.height} pixels)"
                )
            array = np.array(resize(to_8_bits(image, path).convert(mode)), dtype=np.uint8)  # writable for torch
    except FileNotFoundError:
        raise ImageFileError(
            f"Image file {str(path)!r} is missing. Re-extract the dataset, or run `robust data verify` to list every missing file."
        ) from None
    except Image.DecompressionBombError as exc:  # ours, or PIL's own (past twice the limit): "(N pixels)"
        size = re.search(r"(\d+x\d+ )?\(\d+ pixels\)", str(exc))
        raise ImageFileError(
            f"Image file {str(path)!r} is refused as a possible decompression bomb: {size[0] if size else exc} is "
            f"over PIL's limit of {Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS). Replace the file, or raise "
            "that limit in a plugin if such images are genuine."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # SyntaxError: some PIL parsers
        raise ImageFileError(
            f"Image file {str(path)!r} is corrupt or not an image ({exc}). Replace it from the original archive; `robust data verify` lists every bad file."
        ) from None
    return array[:, :, None] if array.ndim == 2 else array


def to_8_bits(image: Image.Image, path: Path) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image scaled to 8 bits by its real range (others as
    they are): PIL would clip it to 0..255. Refused (ImageFileError) when the range is unknown."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float64)
    finite = bool(np.isfinite(values).all())
    low, high = (float(values.min()), float(values.max())) if values.size and finite else (0.0, 0.0)
    if image.mode == "F":
        if not finite or low < 0 or high > 1:
            raise ImageFileError(
                f"Image file {str(path)!r} holds floating-point pixels in [{low:g}, {high:g}]"
                f"{'' if finite else ' (with NaN or infinity)'}; only floats in [0, 1] have a known scale to 8 bits. "
                "Save it as an 8- or 16-bit image, or scale its pixels to [0, 1]."
            )
        scaled = values * 255.0
    elif image.mode.startswith("I;16") or high > 255:
        if low < 0 or high > 65535:
            raise ImageFileError(
                f"Image file {str(path)!r} holds 32-bit integer pixels in [{low:g}, {high:g}], outside 0..65535; "
                "its scale to 8 bits is unknown. Save it as an 8- or 16-bit image."
            )
        scaled = values / 257.0  # 65535 -> 255, as 8-bit = 16-bit >> 8 with rounding
    else:
        scaled = values  # a 32-bit integer image whose values fit in 8 bits
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # 2-D uint8: mode L


def decode_mask(path: Path, resize: Resize) -> np.ndarray:
    """A foreground mask file as uint8 ``(H, W)``: 255 where any channel is non-zero after resizing."""
    array = decode_image(path, resize, mode="RGB")
    return np.where(array.max(axis=2) > 0, 255, 0).astype(np.uint8)


def mask_bbox(mask: np.ndarray) -> list[int]:
    """Tight box ``x0, y0, x1, y1`` (end exclusive) around a mask's foreground.

    An empty mask ("no foreground known": IN-9 images without a no_fg file) gets the empty box
    ``0, 0, 0, 0``, as CCT's images without a box do: rasterised it is no foreground, and the
    bbox crop leaves such an image unconstrained. A whole-image box would claim the opposite.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


class ImageFileSplit(StreamSplit):
    """A split whose images are files; masks, when given, are files too (``None`` for images without one)."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Tensor,
        resize: Resize,
        *,
        groups: Tensor | None = None,
        bias: Tensor | None = None,
        mask_paths: Sequence[Path | None] | None = None,
        bboxes: Tensor | None = None,
        mode: str = "RGB",
    ) -> None:
        super().__init__(labels=labels, groups=groups, bias=bias, bboxes=bboxes)
        self.paths = [Path(p) for p in paths]
        self.mask_paths = list(mask_paths) if mask_paths is not None else None
        self.resize = resize
        self.mode = mode
        if len(self.paths) != len(labels):
            raise DataError(
                f"{len(self.paths)} image paths but {len(labels)} labels; the metadata and the file list disagree."
            )

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        image = torch.from_numpy(decode_image(self.paths[index], self.resize, self.mode)).permute(2, 0, 1).contiguous()
        mask = None
        if self.mask_paths is not None:
            mask_path = self.mask_paths[index]
            side = self.resize.size
            # No mask file: no foreground is known, so the mask is empty (methods skip such samples).
            array = decode_mask(mask_path, self.resize) if mask_path is not None else np.zeros((side, side), np.uint8)
            mask = torch.from_numpy(array)[None]
        return image, mask

    @property
    def decoded_nbytes(self) -> int:
        channels = 1 if self.mode == "L" else 3
        per_image = self.resize.size**2 * (channels + (1 if self.mask_paths is not None else 0))
        return per_image * len(self)

    def load(self, threads: int = 8) -> ArraySplit:
        """Decode every image (PIL releases the GIL while decoding, so threads help) into an ArraySplit.

        With masks, boxes are derived from the resized masks (tight box around the foreground).
        """
        with ThreadPoolExecutor(max_workers=threads) as pool:
            items = list(pool.map(self.read, range(len(self))))
        images = (
            torch.stack([image for image, _ in items])
            if items
            else torch.empty(0, 3, self.resize.size, self.resize.size, dtype=torch.uint8)
        )
        masks = torch.stack([mask for _, mask in items]) if self.mask_paths is not None and items else None
        bboxes = self.bboxes
        if masks is not None and bboxes is None:
            bboxes = torch.tensor([mask_bbox(m[0].numpy()) for m in masks], dtype=torch.long)
        return ArraySplit(
            labels=self.labels, groups=self.groups, bias=self.bias, bboxes=bboxes, images=images, masks=masks
        )


def in_memory(split: ImageFileSplit, policy: str, limit_gb: float) -> ArraySplit | ImageFileSplit:
    """Decode ``split`` into memory when the policy (``auto|yes|no``) and the size limit say so."""
    if policy == "yes" or (policy == "auto" and split.decoded_nbytes <= limit_gb * 2**30):
        return split.load()
    return split
