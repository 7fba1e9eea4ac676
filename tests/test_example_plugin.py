"""The example plugin (examples/robust-example-method) works as a third party would ship it,
with no change to the core: found through its entry point, torch-free at import, trains through
the engine, computes mixup's loss, and adds a CLI command.

`nox -s tests` installs the example before running the suite. The in-process tests fall back
to importing it from the checkout; the ones about installation fail (never skip) when it is missing.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from robust.data import Batch
from robust.distributed import GradientAverager
from robust.engine import Run
from robust.losses import cross_entropy
from robust.models.mlp import build_mlp
from robust.resolve import resolve_run_config
from robust.testing import Crash, CrashAt, TinyDatasetPlugin

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "robust-example-method"
DIST = "robust-example-method"
ENTRY_POINT = "example"


def _installed() -> bool:
    """Whether the example's entry point is installed (checked before the fallback below touches sys.path)."""
    return any(
        ep.name == ENTRY_POINT and ep.dist is not None and ep.dist.name == DIST
        for ep in metadata.entry_points(group="robust")
    )


INSTALLED = _installed()

if importlib.util.find_spec("robust_example_method") is None:  # not installed: import it from the checkout
    sys.path.insert(0, str(EXAMPLE / "src"))

from robust_example_method import method as mixup_module  # noqa: E402
from robust_example_method.method import Mixup, MixupConfig, sample_lambda  # noqa: E402


def require_installed() -> None:
    """Fail loudly (not skip) when the example's entry point is not installed."""
    if not INSTALLED:
        pytest.fail(
            f"The example plugin {DIST!r} is not installed, so its `robust` entry point {ENTRY_POINT!r} is missing. "
            "Run the suite with `nox -s tests` (it installs the example), or install it by hand with "
            f"`pip install -e {EXAMPLE}`.",
            pytrace=False,
        )


def robust(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robust", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


# -- (a) found through its entry point ------------------------------------------------------------


def test_list_shows_mixup_from_the_example_package():
    require_installed()
    result = robust("list", "methods", "--json")
    assert result.returncode == 0, result.stderr
    methods = {m["name"]: m for m in json.loads(result.stdout)["methods"]}
    assert "mixup" in methods, f"mixup not listed: {sorted(methods)}"
    assert methods["mixup"]["package"] == DIST
    assert methods["mixup"]["plugin"] == ENTRY_POINT
    assert methods["erm"]["package"] == "robust-core"


def test_list_plugins_shows_the_example_healthy():
    require_installed()
    plugins = {p["name"]: p for p in json.loads(robust("list", "plugins", "--json").stdout)["plugins"]}
    example = plugins[ENTRY_POINT]
    assert example["package"] == DIST and example["status"] == "ok", example
    assert set(example["hooks"]) == {"register_methods", "register_commands"}


def test_info_shows_alpha_and_the_erm_options():
    require_installed()
    result = robust("info", "mixup")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "alpha" in out and "0.2" in out
    assert DIST in out
    for option in ("lr", "optimizer", "weight_decay"):  # inherited from ERMConfig
        assert option in out
    assert "paper-cifar10" in out
    assert "uses group labels in training: no" in out


def test_load_plugins_allow_list_can_leave_the_example_out():
    require_installed()
    only_core = json.loads(robust("list", "methods", "--json", env={"ROBUST_LOAD_PLUGINS": ""}).stdout)
    assert [m["name"] for m in only_core["methods"]] == ["erm", "groupdro"]
    by_dist = json.loads(robust("list", "methods", "--json", env={"ROBUST_LOAD_PLUGINS": DIST}).stdout)
    assert {m["name"] for m in by_dist["methods"]} == {"erm", "groupdro", "mixup"}


# -- (b) torch-free at import ---------------------------------------------------------------------


def test_plugin_module_does_not_import_torch():
    require_installed()
    code = "import robust_example_method.plugin, sys; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_help_with_the_example_installed_does_not_import_torch():
    """`robust --help` loads the plugin and its commands module: neither may import torch."""
    require_installed()
    code = (
        "import sys; sys.argv = ['robust', '--help']\n"
        "from robust.cli import cli\n"
        "try:\n    cli()\nexcept SystemExit:\n    pass\n"
        "assert 'robust_example_method.commands' in sys.modules, 'the command was not loaded'\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "mixup-lambda" in result.stdout


# -- (c) trains through the engine ----------------------------------------------------------------


@pytest.fixture
def with_mixup(register_plugin):
    """The tiny dataset, and mixup: from its entry point when installed, else registered by hand."""
    import robust_example_method.plugin as example_plugin

    from robust.plugins import load_plugins, pm

    load_plugins()
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        if pm.is_registered(example_plugin):
            yield
        else:
            with register_plugin(example_plugin, ENTRY_POINT):
                yield


def make_run(out: Path, sets=(), resume: bool = False, **flags) -> Run:
    flags.setdefault("epochs", 3)
    resolved = resolve_run_config("mixup", dataset="tiny", sets=["lr=0.05", "alpha=0.4", *sets], flags=flags)
    return Run(resolved, out, resume=resume, quiet=True)


def test_mixup_trains_through_the_engine(tmp_path, with_mixup):
    run = make_run(tmp_path / "run")
    summary = run.fit()
    assert summary["method"] == "mixup"
    assert summary["selection"], "no selection records"
    assert {"best_val_worst_group", "last"} <= set(summary["selection"])
    assert summary["protocol"]["train_group_labels"] is False
    assert summary["train"]["steps"] == 3 * 2  # 96 samples, batch 64: 2 batches an epoch
    assert len(run.history) == 3
    for record in run.history:
        loss = record["metrics"]["train/loss"]
        assert math.isfinite(loss) and loss > 0
        assert 0.0 <= record["metrics"]["train/lambda"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"]["alpha"] == 0.4 and config["method"]["lr"] == 0.05


def test_mixup_resumes_exactly(tmp_path, with_mixup, register_plugin):
    """λ and the pairing come from torch's generator, which the engine seeds and checkpoints."""
    full = make_run(tmp_path / "full", seed=1).fit()
    with register_plugin(CrashAt(evaluation=2), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "cut", seed=1).fit()
    resumed = make_run(tmp_path / "cut", seed=1, resume=True).fit()
    assert resumed["selection"]["last"]["metrics"] == full["selection"]["last"]["metrics"]


# -- (d) the update is mixup's -------------------------------------------------------------------


def make_method(alpha: float = 0.2, lr: float = 0.1) -> Mixup:
    """A Mixup outside the engine: the context carries only what the method uses."""
    torch.manual_seed(0)
    ctx = SimpleNamespace(
        config=SimpleNamespace(train=SimpleNamespace(epochs=1)),
        build_model=lambda: build_mlp({"hidden_sizes": [16]}, num_classes=3, input_shape=(1, 4, 4)),
        build_loss=lambda name: cross_entropy(),
        precision=SimpleNamespace(scaler=None),
        gradients=GradientAverager(),
    )
    return Mixup(MixupConfig(alpha=alpha, lr=lr), ctx)


def make_batch(n: int = 8) -> Batch:
    gen = torch.Generator().manual_seed(1)
    return Batch(
        x=torch.randn(n, 1, 4, 4, generator=gen), y=torch.randint(0, 3, (n,), generator=gen), index=torch.arange(n)
    )


@pytest.mark.parametrize("lam", [0.3, 1.0, 0.0])
def test_update_loss_is_the_mixup_loss(monkeypatch, lam):
    method = make_method()
    batch = make_batch()
    perm = torch.tensor([3, 7, 0, 5, 1, 2, 6, 4])
    monkeypatch.setattr(method, "sample", lambda n, device: (lam, perm))
    before = copy.deepcopy(method.model)

    logs = method.update(batch, 0)

    logits = before(lam * batch.x + (1 - lam) * batch.x[perm])
    expected = lam * F.cross_entropy(logits, batch.y) + (1 - lam) * F.cross_entropy(logits, batch.y[perm])
    assert torch.allclose(logs["loss"], expected, atol=1e-6), (float(logs["loss"]), float(expected))
    assert logs["lambda"] == lam
    changed = any(not torch.equal(p, q) for p, q in zip(before.parameters(), method.model.parameters(), strict=True))
    assert changed, "the optimiser did not step"


def test_lambda_is_drawn_with_torch_and_seeded():
    method = make_method(alpha=0.2)
    torch.manual_seed(5)
    first = method.sample(16, torch.device("cpu"))
    torch.manual_seed(5)
    second = method.sample(16, torch.device("cpu"))
    assert first[0] == second[0] and torch.equal(first[1], second[1])
    lam, perm = first
    assert 0.0 <= lam <= 1.0
    assert sorted(perm.tolist()) == list(range(16))


def test_alpha_zero_is_erm(monkeypatch):
    assert torch.equal(sample_lambda(0.0, (4,)), torch.ones(4))
    method = make_method(alpha=0.0)
    batch = make_batch()
    before = copy.deepcopy(method.model)
    logs = method.update(batch, 0)
    assert logs["lambda"] == 1.0
    assert torch.allclose(logs["loss"], F.cross_entropy(before(batch.x), batch.y), atol=1e-6)


def test_lambda_distribution_matches_beta():
    torch.manual_seed(0)
    lam = sample_lambda(0.2, (20000,))
    assert abs(float(lam.mean()) - 0.5) < 0.02
    # Beta(α, α) has variance 1 / (4 (2α + 1)): 0.1786 for α = 0.2 (mass piled near 0 and 1).
    assert abs(float(lam.var()) - 1 / (4 * 1.4)) < 0.01
    assert mixup_module.MixupConfig().alpha == 0.2


# -- (e) the CLI command --------------------------------------------------------------------------


def test_mixup_lambda_command_prints_mean_and_quantiles():
    require_installed()
    result = robust("mixup-lambda", "--alpha", "0.2", "--n", "10000")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines() if line.strip()}
    assert abs(float(lines["mean"]) - 0.5) < 0.03, result.stdout
    for key in ("q05", "q25", "q50", "q75", "q95"):
        assert 0.0 <= float(lines[key]) <= 1.0, result.stdout


def test_mixup_lambda_command_json_and_bad_input():
    require_installed()
    stats = json.loads(robust("mixup-lambda", "--alpha", "1", "--n", "20000", "--json").stdout)
    assert stats["alpha"] == 1.0 and stats["n"] == 20000
    assert abs(stats["mean"] - 0.5) < 0.02 and abs(stats["q25"] - 0.25) < 0.02  # Beta(1, 1) is uniform
    assert stats["q05"] <= stats["q25"] <= stats["q50"] <= stats["q75"] <= stats["q95"]
    bad = robust("mixup-lambda", "--alpha", "-1")
    assert bad.returncode != 0 and "--alpha" in bad.stderr
