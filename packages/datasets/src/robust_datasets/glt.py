"""imagenet-glt and mscoco-glt: generalized long-tailed classification (Tang et al., ECCV 2022, IFL).

The benchmark is a set of annotation files written by the authors' generators
(github.com/KaihuaTang/Generalized-Long-Tailed-Benchmarks.pytorch, ``_ImageNetGeneration`` and
``_COCOGeneration``); the schema below is the one those generators write and its ``data/DT_*.py``
loaders read (read from that code, not from a released file)::

    {"cat2id": {name: id}, "id2cat": {"<id>": name},
     "train" | "val" | "test_lt" | "test_bl" | "test_bbl": {
         "label":     {key: class id (int or "<int>")},
         "attribute": {key: 0 | 1 | 2},          # pretext attribute, head to tail
         "frequency": {key: 0 | 1 | 2},          # class frequency: many / medium / few
         "path":      {key: image path}}}        # MSCOCO-GLT only; ImageNet-GLT keys ARE the paths

Layout (``DATA_ROOT/imagenet-glt``, ``DATA_ROOT/mscoco-glt``)::

    imagenet-glt/imagenet_sup_intra_lt_inter_lt.json   Train-GLT (+ Test-GLT, Test-CBL, Test-GBL)
    imagenet-glt/imagenet_sup_intra_lt_inter_bl.json   Train-CBL (+ Test-CBL, Test-GBL)
    imagenet-glt/train/<wnid>/<file>.JPEG             the ImageNet training images (or image_root)
    mscoco-glt/coco_glt/annotation.json, coco_glt/images/<key>.jpg    Train-GLT, object crops
    mscoco-glt/coco_cbl/annotation.json, coco_cbl/images/<key>.jpg    Train-CBL

The generators store ABSOLUTE paths of the machine that ran them. A split whose first path does
not exist is re-rooted: its last two path components (``<wnid>/<file>``; MSCOCO-GLT: the file
name) are looked up under ``image_root`` (defaults above). Relative paths are taken relative to
the annotation file's folder.

Protocols (the README's): ``CLT`` = Train-GLT -> Test-CBL (``test_bl``), ``GLT`` = Train-GLT ->
Test-GBL (``test_bbl``), ``ALT`` = Train-CBL -> Test-GBL. ``val`` is the file's ``val``. With
``extra_tests`` the file's other non-empty test sets are evaluated too, named by the paper:
``test_glt`` (``test_lt``), ``test_cbl`` (``test_bl``), ``test_gbl`` (``test_bbl``); so one
Train-GLT run reports CLT and GLT numbers, as the authors' test script does.

Groups: ``groups = label · A + attribute`` (A = 3 attributes in the generators), so worst-group
accuracy is over (class, attribute) cells, and the attribute is ``groups % A``; training batches
carry them only for methods that use group labels (IFL hides the attribute in training).
``bias`` is not set: the attribute is not in label space, so the aligned / conflicting metrics
(label == bias) would compare class ids with attribute ids and mean nothing.
``info.extra["class_frequency"]`` has the many/medium/few bin (0/1/2) of each class. IFL reports
accuracy and macro precision.

Images: IFL evaluates at Resize(128) + CenterCrop(112); here the shorter side is resized to
``image_size · 8/7`` and the centre ``image_size`` square kept (``center_crop=false``: squash the
image to the square), default 112. Normalisation: ImageNet statistics, MSCOCO-GLT the ones of
the authors' COCO config. Training augmentation: pad-and-crop plus flip (IFL: random resized crop
plus flip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image
from pydantic import Field

from robust.api import DataError
from robust_datasets.h5cache import cached_dataset
from robust_datasets.imagefiles import ImageFileSplit, Resize, in_memory
from robust_datasets.missing import missing_dataset
from robust_datasets.options import ImageDatasetConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle

SOURCE = (
    "github.com/KaihuaTang/Generalized-Long-Tailed-Benchmarks.pytorch: run its _ImageNetGeneration / "
    "_COCOGeneration scripts on ImageNet (ILSVRC train) / MSCOCO 2014 + MSCOCO-Attribute"
)
PROTOCOLS = {  # protocol -> (annotation kind, test set)
    "CLT": ("lt", "test_bl"),
    "GLT": ("lt", "test_bbl"),
    "ALT": ("bl", "test_bbl"),
}
TEST_NAMES = {"test_lt": "test_glt", "test_bl": "test_cbl", "test_bbl": "test_gbl"}
FREQUENCY_NAMES = ["many", "medium", "few"]


@dataclass(frozen=True)
class Benchmark:
    """Where one GLT benchmark keeps its files."""

    name: str
    annotations: dict[str, str]  # "lt" / "bl" -> annotation file, relative to the dataset folder
    image_dirs: dict[str, str]  # default image_root per annotation kind
    keep_components: int  # path components kept when re-rooting a path
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET_GLT = Benchmark(
    name="imagenet-glt",
    annotations={"lt": "imagenet_sup_intra_lt_inter_lt.json", "bl": "imagenet_sup_intra_lt_inter_bl.json"},
    image_dirs={"lt": "train", "bl": "train"},
    keep_components=2,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
MSCOCO_GLT = Benchmark(
    name="mscoco-glt",
    annotations={"lt": "coco_glt/annotation.json", "bl": "coco_cbl/annotation.json"},
    image_dirs={"lt": "coco_glt/images", "bl": "coco_cbl/images"},
    keep_components=1,
    mean=(0.473, 0.429, 0.370),
    std=(0.277, 0.268, 0.274),
)


class GLTConfig(ImageDatasetConfig):
    """Options of imagenet-glt and mscoco-glt."""

    protocol: Literal["CLT", "ALT", "GLT"] = Field(
        "GLT",
        description="CLT: Train-GLT -> Test-CBL; ALT: Train-CBL -> Test-GBL; GLT: Train-GLT -> Test-GBL.",
    )
    image_size: int = Field(112, ge=8, le=1024, description="Side of the square images (IFL: 112).")
    center_crop: bool = Field(
        True,
        description="Resize the shorter side to image_size*8/7 and keep the centre square (IFL's 128 -> 112); "
        "false: squash to the square.",
    )
    extra_tests: bool = Field(
        True, description="Also evaluate the annotation file's other test sets (test_glt, test_cbl, test_gbl)."
    )
    image_root: str | None = Field(
        None,
        description="Folder the images are looked up in when the file's absolute paths do not exist "
        "(default: <folder>/train for imagenet-glt, <folder>/coco_glt/images or coco_cbl/images for mscoco-glt).",
    )


@dataclass(frozen=True)
class ShortSideCrop(Resize):
    """Shorter side to ``round(size · 8/7)``, then the centre ``size`` square (torchvision's Resize + CenterCrop)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short = round(self.size * 8 / 7)
        if width <= height:
            new = (short, int(short * height / width))
        else:
            new = (int(short * width / height), short)
        if new != (width, height):
            image = image.resize(new, Image.BILINEAR)
        left = round((new[0] - self.size) / 2.0)
        top = round((new[1] - self.size) / 2.0)
        return image.crop((left, top, left + self.size, top + self.size))


def read_annotation(path: Path, needed: list[str]) -> dict[str, Any]:
    """An annotation file with the top-level entries ``needed``; a DataError names the file otherwise."""
    try:
        with path.open(encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read the GLT annotation file {str(path)!r} ({exc}); generate it again.") from None
    if not isinstance(content, dict):
        raise DataError(f"{str(path)!r} holds a JSON {type(content).__name__}; a GLT annotation file holds an object.")
    absent = [k for k in needed if k not in content]
    if "id2cat" not in content and "cat2id" not in content:
        absent.append("id2cat (or cat2id)")
    if absent:
        raise DataError(
            f"{str(path)!r} has keys {sorted(content)}; expected {needed} and id2cat/cat2id (missing {absent}). "
            "It is not an annotation file of the GLT generators (see DATASETS.md for the schema)."
        )
    return content


def class_names(content: dict[str, Any]) -> list[str]:
    """Names by class id, from ``id2cat`` (``{"<id>": name}``) or the inverse of ``cat2id``."""
    if "id2cat" in content:
        by_id = {int(k): str(v) for k, v in content["id2cat"].items()}
    else:
        by_id = {int(v): str(k) for k, v in content["cat2id"].items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(
            f"Class ids {sorted(by_id)[:10]}... are not 0..{len(by_id) - 1}; the annotation file is corrupt."
        )
    return [by_id[i] for i in range(len(by_id))]


def split_records(split: dict[str, Any], where: str) -> tuple[list[str], list[int], list[int], dict[int, int]]:
    """``(paths, labels, attributes, frequency bin of each class seen)`` of one split, in file order."""
    if not isinstance(split, dict) or "label" not in split or "attribute" not in split:
        found = sorted(split) if isinstance(split, dict) else type(split).__name__
        raise DataError(f"{where} has entries {found}; a GLT split has 'label', 'attribute' and 'frequency'.")
    path_map = split.get("path") or {}
    paths, labels, attributes, frequency = [], [], [], {}
    for key, label in split["label"].items():
        try:
            y = int(label)
            attribute = int(split["attribute"][key])
        except KeyError:
            raise DataError(f"{where}: sample {key!r} has a label but no attribute.") from None
        except (TypeError, ValueError):
            raise DataError(f"{where}: sample {key!r} has a non-integer label or attribute.") from None
        paths.append(str(path_map.get(key, key)))
        labels.append(y)
        attributes.append(attribute)
        if key in split.get("frequency", {}):
            frequency[y] = int(split["frequency"][key])
    return paths, labels, attributes, frequency


def resolve_paths(paths: list[str], base: Path, image_root: Path, keep: int) -> list[Path]:
    """Absolute paths as stored when the first one exists, else their last ``keep`` components under ``image_root``."""
    if not paths:
        return []
    first = Path(paths[0])
    if not first.is_absolute():
        return [base / p for p in paths]
    if first.exists():
        return [Path(p) for p in paths]
    return [image_root.joinpath(*PurePath(p).parts[-keep:]) for p in paths]


def _load(benchmark: Benchmark, config: GLTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    import torch

    from robust.api import DatasetBundle, DatasetInfo

    if not isinstance(config, GLTConfig):
        config = GLTConfig.model_validate(config)
    folder = Path(config.root) if config.root else Path(data_root) / benchmark.name
    kind, test_key = PROTOCOLS[config.protocol]
    relative = benchmark.annotations[kind]
    path = folder / relative
    if not path.is_file():
        raise missing_dataset(
            benchmark.name,
            folder,
            [relative, f"{benchmark.image_dirs[kind]}/..."],
            SOURCE,
            detail=f"Protocol {config.protocol} reads {relative}, which is not there.",
        )
    content = read_annotation(path, ["train", "val", test_key])
    names = class_names(content)
    image_root = Path(config.image_root) if config.image_root else folder / benchmark.image_dirs[kind]
    wanted = {"train": "train", "val": "val", "test": test_key}
    if config.extra_tests:
        for key, name in TEST_NAMES.items():
            if key != test_key and isinstance(content.get(key), dict) and content[key].get("label"):
                wanted[name] = key
    resize = ShortSideCrop(config.image_size) if config.center_crop else Resize(config.image_size)

    records = {split: split_records(content[key], f"{str(path)!r} [{key!r}]") for split, key in wanted.items()}
    num_attributes = 1 + max((max(r[2], default=0) for r in records.values()), default=0)
    frequency: dict[int, int] = {}
    splits: dict[str, Any] = {}
    for split, (paths, labels, attributes, freq) in records.items():
        frequency.update(freq)
        bad = sorted({y for y in labels if not 0 <= y < len(names)})
        if bad or min(attributes, default=0) < 0:
            raise DataError(f"{str(path)!r} [{wanted[split]!r}]: labels {bad[:5]} outside 0..{len(names) - 1} "
                            "or negative attributes; the annotation file is corrupt.")  # fmt: skip
        if not paths:
            raise DataError(f"{str(path)!r} [{wanted[split]!r}] is empty.")
        y = torch.tensor(labels, dtype=torch.long)
        a = torch.tensor(attributes, dtype=torch.long)
        files = resolve_paths(paths, path.parent, image_root, benchmark.keep_components)
        stream = ImageFileSplit(files, y, resize, groups=y * num_attributes + a)
        splits[split] = in_memory(stream, config.in_memory, config.memory_limit_gb)
    info = DatasetInfo(
        name=benchmark.name,
        num_classes=len(names),
        input_shape=(3, config.image_size, config.image_size),
        class_names=names,
        group_names=[f"{c}_att{a}" for c in names for a in range(num_attributes)],
        mean=benchmark.mean,
        std=benchmark.std,
        train_augment="crop_flip",
        extra={
            "folder": str(folder),
            "annotation": str(path),
            "protocol": config.protocol,
            "split_keys": wanted,
            "num_attributes": num_attributes,
            "class_frequency": [frequency.get(c) for c in range(len(names))],
            "frequency_names": FREQUENCY_NAMES,
        },
    )
    return DatasetBundle(info=info, splits=splits)


@cached_dataset("imagenet-glt", config_class=GLTConfig)
def load_imagenet_glt(config: GLTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """ImageNet-GLT from ``DATA_ROOT/imagenet-glt`` (or ``config.root``)."""
    return _load(IMAGENET_GLT, config, data_root)


@cached_dataset("mscoco-glt", config_class=GLTConfig)
def load_mscoco_glt(config: GLTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """MSCOCO-GLT from ``DATA_ROOT/mscoco-glt`` (or ``config.root``)."""
    return _load(MSCOCO_GLT, config, data_root)
