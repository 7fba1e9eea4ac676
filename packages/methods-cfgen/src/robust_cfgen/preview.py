"""The picture behind ``robust cfgen preview``: originals, counterfactual and factual images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from robust_counterfactual.infill import InfillContext, apply_infill, boxes_to_mask, rectangle_mask

from robust.api import ConfigError, atomic_write, get_registry, load_checkpoint, load_dataset

LABEL_HEIGHT = 14
MIN_TILE = 64  # pixels per tile at least


def _foreground_batch(bundle: Any, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``count`` training images with a foreground: (normalised x, labels, mask)."""
    split = bundle.splits["train"]
    info = bundle.info
    images, masks = [], []
    labels = []
    for index in range(len(split)):
        if hasattr(split, "images"):
            image = split.images[index]
            mask = split.masks[index] if split.masks is not None else None
        else:
            image, mask = split.read(index)
        h, w = image.shape[-2:]
        if mask is None and split.bboxes is not None:
            mask = boxes_to_mask(split.bboxes[index : index + 1], h, w)[0]
        if mask is None or not bool((mask > 0).any()):
            continue
        images.append(image)
        masks.append((mask > 0).float().reshape(1, h, w))
        labels.append(int(split.labels[index]))
        if len(images) == count:
            break
    if not images:
        raise ConfigError(
            f"Dataset {info.name!r} has no training image with a foreground mask or box, so there is nothing to "
            "preview. Use a dataset with masks or boxes (synthetic-waterbirds, waterbirds with masks, in9, cct)."
        )
    channels = info.input_shape[0]
    mean = torch.tensor(info.mean).view(1, channels, 1, 1)
    std = torch.tensor(info.std).view(1, channels, 1, 1)
    x = (torch.stack(images).float() / 255 - mean) / std
    return x, torch.tensor(labels), torch.stack(masks)


def _model(bundle: Any, run_dir: str | None) -> torch.nn.Module:
    """The classifier of a finished run (for fgsm), else the dataset's default model, untrained."""
    import json

    info = bundle.info
    name, options = "cnn", {}
    if run_dir is not None:
        config = json.loads((Path(run_dir) / "config.json").read_text())
        name = config["model"]["name"]
        options = {k: v for k, v in config["model"].items() if k != "name"}
    entry = get_registry().get("model", name)
    config_cls = entry.load_config()
    model = entry.load()(
        config_cls.model_validate(options) if config_cls else None,
        num_classes=info.num_classes,
        input_shape=info.input_shape,
    )
    if run_dir is not None:
        state = load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")["method"]["modules"]
        weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        model.load_state_dict(weights)
    return model.eval()


def write_preview(
    dataset: str,
    options: dict[str, Any],
    *,
    count: int,
    cf_infills: list[str],
    f_infills: list[str],
    run_dir: str | None,
    out: str,
    seed: int,
    root: str | None,
) -> Path:
    """Render the grid and write it atomically as PNG; returns the path."""
    bundle = load_dataset(dataset, options, root)
    x, y, mask = _foreground_batch(bundle, count)
    info = bundle.info
    channels = info.input_shape[0]
    mean = torch.tensor(info.mean).view(1, channels, 1, 1)
    std = torch.tensor(info.std).view(1, channels, 1, 1)
    torch.manual_seed(seed)
    model = _model(bundle, run_dir) if "fgsm" in f_infills else None
    ctx = InfillContext(mean=mean, std=std, labels=y, model=model, module=model)
    columns = [("original", x)]
    region = mask if info.extra.get("masks_are_boxes") else rectangle_mask(mask)  # as CFGen.generate
    for name in cf_infills:
        columns.append((f"CF {name}", apply_infill(name, x, 1.0 - region, ctx)))
    for name in f_infills:
        columns.append((f"F {name}", apply_infill(name, x, mask, ctx)))
    tiles = [((img * std + mean).clamp(0, 1) * 255).round().byte() for _, img in columns]
    n, _, h, w = x.shape
    zoom = max(1, -(-MIN_TILE // w))  # small images are enlarged (nearest) so that labels fit
    h, w = h * zoom, w * zoom
    grid = Image.new("RGB", (w * len(columns), LABEL_HEIGHT + h * n), "white")
    draw = ImageDraw.Draw(grid)
    for col, (label, _) in enumerate(columns):
        draw.text((col * w + 2, 1), label, fill="black")
        for row in range(n):
            pixels = tiles[col][row].permute(1, 2, 0).numpy()
            if pixels.shape[2] == 1:
                pixels = np.repeat(pixels, 3, axis=2)
            tile = Image.fromarray(pixels).resize((w, h), Image.Resampling.NEAREST)
            grid.paste(tile, (col * w, LABEL_HEIGHT + row * h))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
    return path
