"""benchmarks/disent_original.py: without the original code it says how to get it and exits 2 (no
training), and the Colored MNIST it writes is in DisEnt's on-disk layout, readable by both sides."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from glob import glob
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "disent_original.py"


def load_script():
    spec = importlib.util.spec_from_file_location("disent_original", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra", [[], ["--original", "no/such/checkout"]])
def test_without_the_original_it_says_how_to_get_it_and_exits_2(extra, tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-root", str(tmp_path), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert "git clone https://github.com/kakaoenterprise/Learning-Debiased-Disentangled" in message
    assert "--original" in message
    assert done.stdout == ""
    assert not any(tmp_path.iterdir())  # nothing generated, nothing trained


def test_an_incomplete_checkout_is_refused(tmp_path):
    (tmp_path / "train.py").write_text("")
    script = load_script()
    with pytest.raises(script.NoOriginal, match="not a checkout"):
        script.check_original(str(tmp_path))


def test_the_cpu_patches_apply_to_a_copy_only(tmp_path):
    script = load_script()
    original = tmp_path / "original"
    (original / "data").mkdir(parents=True)
    util = "class EMA:\n    def __init__(self, label):\n        self.label = label.cuda()\n"
    util += "        self.max = torch.zeros(self.num_classes).cuda()\n"
    (original / "util.py").write_text(util)
    done = script.copy_and_patch(original, tmp_path / "copy")
    assert len(done) == 2
    assert ".cuda()" not in (tmp_path / "copy" / "util.py").read_text()
    assert (original / "util.py").read_text() == util


def test_the_layout_is_disents_and_robusts_cmnist_reads_it(tmp_path):
    from robust_datasets.lff_release import load_cmnist
    from robust_datasets.synthetic_cmnist import SyntheticCMNISTConfig, generate

    arrays = generate(SyntheticCMNISTConfig(n_train=60, n_val=12, n_test=15, conflict_pct=5))
    out = load_script().write_disent_layout(arrays, tmp_path / "cmnist", 5.0, {"source": "test"})
    assert out == tmp_path / "cmnist" and not (tmp_path / "cmnist.partial").exists()

    # Found as DisEnt's CMNISTDataset globs them; file <i>_<y>_<b>.png is image i of its split.
    root = out / "5pct"
    splits = {
        "train": glob(str(root / "align" / "*" / "*")) + glob(str(root / "conflict" / "*" / "*")),
        "val": glob(str(root / "valid" / "*")),
        "test": glob(str(root / ".." / "test" / "*" / "*")),
    }
    for split, paths in splits.items():
        labels, bias, images = (arrays[f"{split}.{key}"] for key in ("labels", "bias", "images"))
        assert len(paths) == len(labels)
        for path in paths:
            i, y, b = (int(token) for token in Path(path).stem.split("_"))
            assert (y, b) == (labels[i], bias[i])  # DisEnt reads path.split("_")[-2] and [-1]
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1), images[i])
            if split != "val":
                assert Path(path).parent.name == str(y)
            if split == "train":
                assert Path(path).parent.parent.name == ("align" if y == b else "conflict")
    counts = json.loads((out / "metadata.json").read_text())["counts"]
    assert counts == {"train/align": 57, "train/conflict": 3, "val": 12, "test": 15}

    bundle = load_cmnist({"root": str(out), "conflict_pct": 5.0}, tmp_path / "data")  # robust's reader
    for split in ("train", "val", "test"):
        ours = bundle.splits[split]
        rows = sorted(zip(ours.labels.tolist(), ours.bias.tolist(), strict=True))
        assert rows == sorted(zip(arrays[f"{split}.labels"].tolist(), arrays[f"{split}.bias"].tolist(), strict=True))
