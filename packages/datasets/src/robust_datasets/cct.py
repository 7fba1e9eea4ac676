"""cct: Caltech Camera Traps, the ECCV'18 split of Beery et al., as CFGen reads it.

Layout (``DATA_ROOT/cct``, as CFGen's ``datasets/fetch_cct.sh`` extracts it)::

    cct/eccv_18_annotation_files/train_annotations.json
                                 cis_val_annotations.json   cis_test_annotations.json
                                 trans_val_annotations.json trans_test_annotations.json
    cct/eccv_18_all_images_sm/<image_id>.jpg

Each annotation file is COCO-like: ``images`` (``id``, ``width``, ``height`` of the ORIGINAL
image, ...), ``annotations`` (``image_id``, ``category_id``, optional ``bbox`` = ``[x, y, w,
h]`` in original pixels) and ``categories`` (``id``, ``name``).

As CFGen (``MyCCT_Dataset``): one sample per (image, category) pair, in sorted (image id,
category id) order, so an image showing two species is two samples; the empty category (id 30)
is removed; the remaining categories (of all five files together) sorted by id are the labels
(15 on the real files). The boxes of a pair are rescaled from the JSON's width/height to the
decoded ``image_size`` square (the stored ``_sm`` images are smaller than the originals, so the
JSON size, not the file's, is the reference).

Our split holds one box per sample: ``bboxes`` is the UNION of the pair's boxes (``x0, y0, x1,
y1``, end exclusive, rounded outwards). A pair without any box gets the EMPTY box ``(0, 0, 0,
0)``: no foreground is known (CFGen gives it -1 coordinates, trains it as a plain sample and
crops it anywhere), and its index is listed in ``info.extra["no_box"][split]``. With
``masks=true`` the training split also carries a mask rasterised from every box (255 inside any
box), so methods see the exact multi-box foreground; a pair without a box gets an all-zero mask.
``info.extra["masks_are_boxes"]`` says so: CFGen infills those boxes themselves for its
counterfactuals (its ``is_mask_rect``), not the rectangle around them.

Splits: ``train``; ``val`` = cis_val; ``test`` = cis_test (camera locations seen in training);
``test_trans`` = trans_test (unseen locations); ``val_trans`` = trans_val. No groups, no bias.
CFGen selects models by val AUC; ``val`` here is cis_val. Images are resized to ``image_size``
squares (CFGen evaluates at 224×224 without crop) with ImageNet statistics, or
``normalization=bit`` (mean = std = 0.5, CFGen's); pad-and-crop plus flip stands in for CFGen's
resize-crop-flip training augmentation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from robust.api import DataError
from robust_datasets.h5cache import cached_dataset
from robust_datasets.imagefiles import ImageFileSplit, Resize, decode_image, in_memory
from robust_datasets.missing import missing_dataset
from robust_datasets.options import NormalizedImageConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor

    from robust.api import DatasetBundle

SOURCE = (
    "lila.science/datasets/caltech-camera-traps (ECCV 2018 subset: eccv_18_all_images_sm.tar.gz and "
    "eccv_18_annotations.tar.gz; CFGen's datasets/fetch_cct.sh)"
)
ANNOTATIONS = "eccv_18_annotation_files"
IMAGES = "eccv_18_all_images_sm"
SPLIT_FILES = {
    "train": "train_annotations.json",
    "val": "cis_val_annotations.json",
    "test": "cis_test_annotations.json",
    "test_trans": "trans_test_annotations.json",
    "val_trans": "trans_val_annotations.json",
}
EMPTY_CATEGORY = 30

Box = tuple[int, int, int, int]


class CCTConfig(NormalizedImageConfig):
    """Options of cct."""

    masks: bool = Field(
        False,
        description="Give the training split masks rasterised from every box of a sample (all zero without a box).",
    )


class BoxMaskSplit(ImageFileSplit):
    """Image files whose mask is drawn from boxes (already in output pixels), 255 inside any box."""

    def __init__(self, paths: list[Path], labels: Tensor, resize: Resize, boxes: list[list[Box]], **kwargs: Any):
        super().__init__(paths, labels, resize, mask_paths=[None] * len(paths), **kwargs)
        self.boxes = boxes

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        import torch

        image = torch.from_numpy(decode_image(self.paths[index], self.resize)).permute(2, 0, 1).contiguous()
        side = self.resize.size
        mask = np.zeros((side, side), dtype=np.uint8)
        for x0, y0, x1, y1 in self.boxes[index]:
            mask[y0:y1, x0:x1] = 255
        return image, torch.from_numpy(mask)[None]


def read_annotations(path: Path) -> dict[str, Any]:
    """One annotation file, checked for the COCO-like keys; a DataError names the file otherwise."""
    try:
        with path.open(encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read the CCT annotation file {str(path)!r} ({exc}); extract it again.") from None
    expected = ["images", "annotations", "categories"]
    if not isinstance(content, dict) or any(k not in content for k in expected):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise DataError(f"{str(path)!r} has keys {found}; a CCT (COCO-style) annotation file has {expected}.")
    return content


def scale_box(box: list[float], width: float, height: float, side: int) -> Box | None:
    """``[x, y, w, h]`` in a ``width × height`` image -> ``x0, y0, x1, y1`` in a ``side`` square, rounded outwards."""
    x, y, w, h = (float(v) for v in box)
    if any(math.isnan(v) for v in (x, y, w, h)):
        return None
    sx, sy = side / width, side / height
    x0 = min(max(math.floor(x * sx), 0), side - 1)
    y0 = min(max(math.floor(y * sy), 0), side - 1)
    x1 = min(max(math.ceil((x + w) * sx), x0 + 1), side)
    y1 = min(max(math.ceil((y + h) * sy), y0 + 1), side)
    return x0, y0, x1, y1


def samples(content: dict[str, Any], path: Path, side: int) -> list[tuple[str, int, list[Box]]]:
    """``(image_id, category_id, boxes)`` per (image, category) pair, sorted, the empty category dropped."""
    sizes = {str(img["id"]): (img.get("width"), img.get("height")) for img in content["images"] if "id" in img}
    pairs: dict[tuple[str, int], list[list[float]]] = {}
    for ann in content["annotations"]:
        try:
            key = (str(ann["image_id"]), int(ann["category_id"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{str(path)!r}: an annotation lacks image_id or category_id ({ann!r}); the file is not a CCT "
                "annotation file."
            ) from None
        boxes = pairs.setdefault(key, [])
        bbox = ann.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4:
            boxes.append(bbox)
    out = []
    for (image_id, category), raw in sorted(pairs.items()):
        if category == EMPTY_CATEGORY:
            continue
        boxes: list[Box] = []
        if raw:
            width, height = sizes.get(image_id, (None, None))
            if not width or not height:
                raise DataError(
                    f"{str(path)!r}: image {image_id!r} has boxes but no width/height in 'images'; boxes are in "
                    "original pixels and cannot be rescaled without them."
                )
            boxes = [b for b in (scale_box(r, width, height, side) for r in raw) if b is not None]
        out.append((image_id, category, boxes))
    return out


NO_BOX: Box = (0, 0, 0, 0)


def union(boxes: list[Box]) -> Box:
    """The smallest box holding every box; the empty box when there is none (no foreground known)."""
    if not boxes:
        return NO_BOX
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


@cached_dataset("cct", config_class=CCTConfig, version=3)
def load(config: CCTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """CCT ECCV'18 from ``DATA_ROOT/cct`` (or ``config.root``)."""
    import torch

    from robust.api import DatasetBundle, DatasetInfo

    if not isinstance(config, CCTConfig):
        config = CCTConfig.model_validate(config)
    folder = Path(config.root) if config.root else Path(data_root) / "cct"
    expected = [f"{ANNOTATIONS}/{f}" for f in SPLIT_FILES.values()] + [f"{IMAGES}/"]
    absent = [e for e in expected if not (folder / e.rstrip("/")).exists()]
    if absent:
        raise missing_dataset("cct", folder, expected, SOURCE, detail=f"Not found: {', '.join(absent)}.")

    side = config.image_size
    contents = {split: read_annotations(folder / ANNOTATIONS / file) for split, file in SPLIT_FILES.items()}
    categories: dict[int, str] = {}
    for content in contents.values():
        for cat in content["categories"]:
            if int(cat["id"]) != EMPTY_CATEGORY:
                categories.setdefault(int(cat["id"]), str(cat.get("name", cat["id"])))
    category_ids = sorted(categories)
    label_of = {cid: i for i, cid in enumerate(category_ids)}

    resize = Resize(side)
    splits: dict[str, Any] = {}
    no_box: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    for split, content in contents.items():
        path = folder / ANNOTATIONS / SPLIT_FILES[split]
        items = samples(content, path, side)
        unknown = sorted({c for _, c, _ in items if c not in label_of})
        if unknown:
            raise DataError(f"{str(path)!r}: annotations use category ids {unknown} that no 'categories' list defines.")
        paths = [folder / IMAGES / f"{image_id}.jpg" for image_id, _, _ in items]
        labels = torch.tensor([label_of[c] for _, c, _ in items], dtype=torch.long)
        bboxes = torch.tensor([union(b) for _, _, b in items], dtype=torch.long).reshape(-1, 4)
        boxes = [b for _, _, b in items]
        if split == "train" and config.masks:
            stream: ImageFileSplit = BoxMaskSplit(paths, labels, resize, boxes, bboxes=bboxes)
        else:
            stream = ImageFileSplit(paths, labels, resize, bboxes=bboxes)
        splits[split] = in_memory(stream, config.in_memory, config.memory_limit_gb)
        no_box[split] = [i for i, b in enumerate(boxes) if not b]
        sizes[split] = len(items)
    info = DatasetInfo(
        name="cct",
        num_classes=len(category_ids),
        input_shape=(3, side, side),
        class_names=[categories[c] for c in category_ids],
        group_names=[],
        mean=config.mean_std()[0],
        std=config.mean_std()[1],
        train_augment="crop_flip",
        has_masks=config.masks,
        auc=True,  # CFGen selects CCT models by val macro AUC
        extra={
            "folder": str(folder),
            "category_ids": category_ids,
            "split_files": SPLIT_FILES,
            "split_sizes": sizes,
            "no_box": no_box,
            "masks_are_boxes": config.masks,
            "samples": "one per (image, category) pair",
        },
    )
    return DatasetBundle(info=info, splits=splits)
