"""benchmarks/gpu_check.py runs end to end on the CPU at tiny sizes (`--device cpu --small`), so that the
first session lent a GPU spends its time measuring, not debugging the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_small_on_the_cpu_and_writes_its_figures(tmp_path, data_root):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--small", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    erm = figures["erm_resnet"]
    assert set(erm["images_per_s"]) == {"group_dro", "fast", "engine"}
    assert all(v > 0 for v in erm["images_per_s"].values())
    assert erm["ratio_engine_to_group_dro"] == erm["images_per_s"]["engine"] / erm["images_per_s"]["group_dro"]
    disent = figures["disent_cmnist"]
    assert disent["projected_50k_steps_s"] == 50_000 / disent["steps_per_s"]
    assert figures["clp_step"]["ratio_clp_to_erm"] > 1  # CLP's step does strictly more work than ERM's
    assert figures["machine"]["device"] == "cpu" and "load average" in figures["machine"]["load"]
    assert "engine / group_DRO's loader" in done.stdout
