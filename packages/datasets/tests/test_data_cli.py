"""`robust data status | verify | cache` as a user meets them: real entry points, exit codes, one-paragraph errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from robust import hookimpl
from robust.data import DatasetBundle, DatasetInfo
from robust.resolve import resolve_run_config
from robust_datasets import synthetic_waterbirds
from robust_datasets.h5cache import H5Split, cache_path, cached_dataset
from robust_datasets.imagefiles import ImageFileSplit, Resize
from robust_datasets.options import ImageDatasetConfig

WIDE = {"COLUMNS": "200"}  # rich tables: no wrapping in the captured output


def robust(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robust", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **WIDE, **(env or {})},
        timeout=300,
    )


def assert_clean_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("Error:") and "Traceback" not in err and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_list_json_generated_missing_present_cached(tmp_path):
    result = robust("data", "list", "--json", env={"ROBUST_DATA": str(tmp_path)})  # the old name, kept as an alias
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["data_root"] == str(tmp_path)
    by_name = {d["name"]: d for d in listing["datasets"]}
    assert by_name["synthetic-cmnist"]["status"] == "generated"
    assert by_name["synthetic-cmnist"]["package"] == "robust-datasets"
    assert by_name["waterbirds"]["status"] == "missing"
    assert by_name["waterbirds"]["path"] == str(tmp_path / "waterbird_complete95_forest2water2")
    assert not by_name["waterbirds"]["cached"]

    folder = tmp_path / "waterbird_complete95_forest2water2"
    folder.mkdir()
    (folder / "metadata.csv").write_text("img_id,img_filename,y,split,place,place_filename\n")
    cache = tmp_path / ".cache" / "waterbirds-0123456789abcdef.h5"
    cache.parent.mkdir()
    cache.touch()
    other_root = tmp_path / "elsewhere"
    result = robust("data", "status", "--json", "--data-root", str(tmp_path), env={"ROBUST_DATA": str(other_root)})
    by_name = {d["name"]: d for d in json.loads(result.stdout)["datasets"]}
    assert by_name["waterbirds"]["status"] == "present" and by_name["waterbirds"]["cached"]
    assert by_name["waterbirds"]["cache_files"] == [str(cache)]
    table = robust("data", "status", "--data-root", str(tmp_path))
    assert re.search(r"waterbirds\s+.*present \+ cached", table.stdout), table.stdout


def test_list_does_not_import_torch():
    code = (
        "import sys\nsys.argv = ['robust', 'data', 'list']\nfrom robust.cli import cli\n"
        "try:\n    cli()\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_verify_generated_dataset_prints_counts(tmp_path):
    result = robust(
        "data", "verify", "synthetic-cmnist", "--set", "n_train=200", "--set", "dataset.n_val=50",
        "--set", "n_test=50", env={"ROBUST_DATA": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"\(all\)\s+│\s+200\s+│\s+50\s+│\s+50", result.stdout), result.stdout
    assert re.search(r"digit0_red\s+│\s+20\s", result.stdout)
    assert "OK" in result.stdout


@pytest.mark.slow
def test_verify_missing_dataset_is_one_paragraph_naming_the_path(tmp_path):
    result = robust("data", "verify", "waterbirds", "--data-root", str(tmp_path))
    assert_clean_error(result, str(tmp_path / "waterbird_complete95_forest2water2"), "metadata.csv", "group_DRO")
    result = robust("data", "verify", "waterbird", "--data-root", str(tmp_path))
    assert_clean_error(result, "Unknown dataset 'waterbird'", "waterbirds")
    result = robust("data", "verify", "synthetic-cmnist", "--set", "train.epochs=3")
    assert_clean_error(result, "dataset options only")
    result = robust("data", "verify", "synthetic-cmnist", "--set", "n_trian=3")
    assert_clean_error(result, "'n_trian' is not an option")


def test_cache_then_a_run_style_load_reads_it(tmp_path):
    sets = ["--set", "scale=0.02", "--set", "image_size=32"]
    result = robust("data", "cache", "synthetic-waterbirds", *sets, env={"ROBUST_DATA": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    written = Path(re.search(r"Wrote (\S+\.h5)", result.stdout).group(1))
    assert written.is_file() and written.parent == tmp_path / ".cache"
    assert "size:" in result.stdout and "time:" in result.stdout
    assert "not wrapped" in result.stderr  # honest: this factory does not read HDF5 caches

    # Resolve the dataset config exactly as `robust run` does, then load through the decorator.
    resolved = resolve_run_config(
        "erm", dataset="synthetic-waterbirds", sets=["dataset.scale=0.02", "dataset.image_size=32"]
    )
    entry = resolved.dataset
    options = {k: v for k, v in resolved.config.dataset.items() if k != "name"}
    config = entry.load_config().model_validate(options)
    assert cache_path(tmp_path, "synthetic-waterbirds", config) == written

    def must_not_build(config, data_root):
        raise AssertionError("the factory ran although the cache exists")

    load = cached_dataset("synthetic-waterbirds")(must_not_build)
    cached = load(config, tmp_path)
    generated = synthetic_waterbirds.load(config, tmp_path)
    assert cached.info == generated.info
    for name, split in generated.splits.items():
        for attr in ("images", "labels", "groups", "bias", "masks", "bboxes"):
            assert torch.equal(getattr(cached.splits[name], attr), getattr(split, attr)), (name, attr)


# -- verify on an image folder, through a throwaway plugin ----------------------------------------------


class FolderConfig(ImageDatasetConfig):
    image_size: int = 16


def _folder_build(config: FolderConfig, data_root: Path) -> DatasetBundle:
    root = Path(config.root) if config.root else data_root / "toy-folder"
    paths = sorted((root / "images").iterdir())
    labels = torch.tensor([int(p.stem) % 2 for p in paths])
    resize = Resize(config.image_size)
    splits = {
        name: ImageFileSplit(paths[part], labels[part], resize, groups=labels[part])
        for name, part in (("train", slice(0, 6)), ("val", slice(6, 8)), ("test", slice(8, 10)))
    }
    info = DatasetInfo(
        name="toy-folder", num_classes=2, input_shape=(3, config.image_size, config.image_size),
        class_names=["even", "odd"], group_names=["even", "odd"],
    )  # fmt: skip
    return DatasetBundle(info, splits)


folder_load = cached_dataset("toy-folder", config_class=FolderConfig)(_folder_build)


class ToyFolderPlugin:
    @hookimpl
    def register_datasets(self, register):
        register(
            "toy-folder", folder_load, config=FolderConfig, description="test", folder="toy-folder",
            files=["images"], expected_counts={"train": [3, 3], "val": [1, 1], "test": [1, 1]},
        )  # fmt: skip


@pytest.fixture
def toy_folder(tmp_path, register_plugin):
    rng = np.random.default_rng(0)
    images = tmp_path / "toy-folder" / "images"
    images.mkdir(parents=True)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(images / f"{i}.png")
    with register_plugin(ToyFolderPlugin(), "toy-folder-plugin"):
        yield tmp_path


def invoke(*args: str):
    from robust.cli import cli

    return CliRunner().invoke(cli, list(args), env=WIDE)


def test_verify_reports_every_bad_file_even_when_cached(toy_folder):
    root = str(toy_folder)
    result = invoke("data", "verify", "toy-folder", "--data-root", root)
    assert result.exit_code == 0, result.output
    assert "✓" in result.stdout and "OK" in result.stdout

    result = invoke("data", "cache", "toy-folder", "--data-root", root, "--lzf")
    assert result.exit_code == 0, result.output
    cached = folder_load(FolderConfig(in_memory="no"), toy_folder)
    assert isinstance(cached.splits["train"], H5Split)  # the decorated factory now reads the file

    images = toy_folder / "toy-folder" / "images"
    (images / "3.png").write_bytes(b"\x89PNG garbage")
    (images / "8.png").write_bytes(b"")
    result = invoke("data", "verify", "toy-folder", "--data-root", root)
    assert result.exit_code == 1, result.output
    assert "2 problem(s)" in result.stdout
    assert "3.png" in result.stdout and "8.png" in result.stdout  # both, not just the first

    (images / "9.png").unlink()  # a count mismatch against expected_counts
    (images / "8.png").unlink()
    (images / "3.png").unlink()
    result = invoke("data", "verify", "toy-folder", "--data-root", root)
    assert result.exit_code == 1
    assert "split 'val' has 1 images, expected 2" in result.stdout
    assert "split 'train' group 0 (even) has 4 images, expected 3" in result.stdout
    result = invoke("data", "verify", "toy-folder", "--data-root", root, "--set", "image_size=12")
    assert "✗" in result.stdout  # image_size does not change counts: still compared
