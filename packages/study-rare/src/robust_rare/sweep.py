"""The study's main grid: patterns × number of planted examples × seeds (× mitigations), as
ordinary runs, then the spurious score of each and a plot of score against the number of examples.

Runs are ERM on ``{dataset}{pattern}-{n}-{target}-{seed}`` with the study's training recipe (Adam
lr 0.01, batch 128, MultiStepLR ×0.1 at the epochs the reference picks for the run length), model
seed 0 and the dataset seed varying, as the reference averages over dataset seeds. On the study's
own datasets the model, weight decay and numbers of planted examples are the study's by default
(:data:`RECIPES`), and the training split is the reference's whole one. The ``0 examples``
baseline is one model per mitigation trained on the clean data, scored with each pattern (seed 0),
as the study's. Every run has a stable directory under the sweep's, so a sweep that stopped is
simply launched again: finished runs are kept, interrupted ones resumed.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robust_sweep.sweep import SlurmOptions, execute, run_one
from robust_sweep.sweep import SweepRun as CoreRun

from robust.api import ConfigError, RunDir, atomic_write
from robust_rare.names import dataset_name, reference_options

# The reference's MultiStepLR milestones by total epochs (spurious_ml/models/torch_utils).
MILESTONES = [
    (30, [15, 25]),
    (40, [20, 30]),
    (50, [25, 40]),
    (60, [30, 50]),
    (70, [40, 50, 60]),
    (80, [40, 60, 70]),
    (120, [50, 90, 110]),
    (140, [60, 100, 120]),
    (160, [40, 80, 120, 140]),
    (200, [80, 140, 180]),
]
STUDY = {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "schedule": "step", "gamma": 0.1}


@dataclass(frozen=True)
class Recipe:
    """What the study trains on one of its datasets (``params.py`` TrainClassifier, with Adam as in the
    notebooks' figures: ``notebooks/rare_spurious_correlation.ipynb``)."""

    model: str
    weight_decay: float
    counts: list[int]


# MNIST / Fashion-MNIST: ce-tor-LargeMLP, wd 0, n in [3, 5, 10, 20, 100, 2000, 5000]; CIFAR-10:
# aug01-ce-tor-altResNet20Norm02 (aug01 is cifar10's own crop_flip), wd 1e-4, n up to 500. 0 is the clean baseline.
RECIPES = {
    "mnist": Recipe("LargeMLP", 0.0, [0, 3, 5, 10, 20, 100, 2000, 5000]),
    "fashion-mnist": Recipe("LargeMLP", 0.0, [0, 3, 5, 10, 20, 100, 2000, 5000]),
    "cifar10": Recipe("altResNet20Norm02", 1e-4, [0, 3, 5, 10, 20, 100, 500]),
}
DEFAULT_COUNTS = [0, 1, 3, 10, 100]  # other datasets


def recipe(dataset: str) -> Recipe | None:
    """The study's recipe for ``dataset`` (a reference name like ``fashion`` too), or None."""
    return RECIPES.get(dataset_name(dataset))


MITIGATIONS = {"l2": "weight_decay", "noise": "train.input_noise"}


def study_milestones(epochs: int) -> list[int]:
    """The reference's milestones for a run of ``epochs``; shorter runs scale its 70-epoch ones."""
    if epochs < 30:
        return sorted({max(1, round(epochs * m / 70)) for m in (40, 50, 60)})
    for limit, milestones in MILESTONES:
        if epochs <= limit:
            return milestones
    return [60, 120]


# The study's grids (notebooks/regularization.ipynb), MNIST / Fashion-MNIST and CIFAR-10.
GRIDS = {
    "l2-grid": [f"l2={v}" for v in ("1e-5", "1e-4", "1e-3", "1e-2", "5e-2", "1e-1")],
    "noise-grid": [f"noise={v}" for v in ("0.05", "0.1", "0.2", "0.5", "0.75", "1.0", "5.0")],
    "l2-grid-cifar": [f"l2={v}" for v in ("1e-6", "1e-5", "1e-4", "1e-3", "1e-2")],
    "noise-grid-cifar": [f"noise={v}" for v in ("0.1", "0.2", "0.5", "1.0", "2.0")],
}


def expand_mitigations(names: list[str]) -> list[str]:
    """``l2-grid`` and friends expanded to the study's values; others as given."""
    out: list[str] = []
    for name in names:
        out += GRIDS.get(name, [name])
    return list(dict.fromkeys(out))


def parse_mitigation(text: str) -> tuple[str, list[str]]:
    """``none`` | ``l2=1e-3`` | ``noise=0.1``: (name, the run's --set options)."""
    if text == "none":
        return "none", []
    key, _, value = text.partition("=")
    if key not in MITIGATIONS or not value:
        raise ConfigError(
            f"Unknown mitigation {text!r}: expected none, l2=WEIGHT_DECAY (e.g. l2=1e-3) or noise=STD (e.g. noise=0.1)."
        )
    try:
        float(value)
    except ValueError:
        raise ConfigError(f"Mitigation {text!r}: {value!r} is not a number.") from None
    return text, [f"{MITIGATIONS[key]}={value}"]


@dataclass(frozen=True)
class Cell:
    """One run of the grid; ``pattern`` None is the clean baseline (0 examples)."""

    pattern: str | None
    n: int
    seed: int
    mitigation: str

    def directory(self, dataset: str, target: int) -> str:
        data = f"{dataset}-clean" if self.pattern is None else f"{dataset}{self.pattern}-{self.n}-{target}-{self.seed}"
        return f"{data}/{self.mitigation}"


@dataclass
class SweepSpec:
    dataset: str
    patterns: list[str]
    counts: list[int]
    seeds: list[int]
    target: int = 0
    mitigations: list[str] = field(default_factory=lambda: ["none"])
    model: str | None = None
    epochs: int = 70
    sets: list[str] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        out = []
        for mitigation in self.mitigations:
            if 0 in self.counts:
                out.append(Cell(None, 0, 0, mitigation))
            out += [Cell(p, n, s, mitigation) for p in self.patterns for n in self.counts if n > 0 for s in self.seeds]
        return out

    def run_sets(self, cell: Cell) -> list[str]:
        """The study's recipe, then the cell's mitigation, then the sweep's own options (later ones win)."""
        study = recipe(self.dataset)
        base = [f"{k}={v}" for k, v in {**STUDY, **({"weight_decay": study.weight_decay} if study else {})}.items()]
        base += [f"milestones={study_milestones(self.epochs)}", "train.batch_size=128"]
        base += [f"dataset.{k}={v}" for k, v in reference_options(self.dataset).items()]
        return [*base, *parse_mitigation(cell.mitigation)[1], *self.sets]

    @property
    def model_name(self) -> str | None:
        """The model given, else the study's on its datasets, else None (the dataset's default)."""
        study = recipe(self.dataset)
        return self.model or (study.model if study else None)


def cell_dataset(spec: SweepSpec, cell: Cell) -> str:
    """The dataset name of a cell: the reference's planted name, or the clean dataset."""
    return spec.dataset if cell.pattern is None else f"{spec.dataset}{cell.pattern}-{cell.n}-{spec.target}-{cell.seed}"


def cell_run(spec: SweepSpec, cell: Cell) -> CoreRun:
    """A cell as an ordinary run of the core's sweeps (ERM with the study's recipe)."""
    sets = [*spec.run_sets(cell), *([f"model.name={spec.model_name}"] if spec.model_name else [])]
    return CoreRun("erm", cell_dataset(spec, cell), 0, (), tuple(sets), (("epochs", spec.epochs),))


def run_cell(spec: SweepSpec, cell: Cell, root: Path) -> Path:
    """Train (or resume, or keep) the run of ``cell`` in this process; its directory."""
    out = root / cell.directory(spec.dataset, spec.target)
    run_one(cell_run(spec, cell), str(out))
    return out


def score_cell(spec: SweepSpec, cell: Cell, run_dir: Path, pattern: str) -> dict[str, Any]:
    from robust.api import load_trained_run
    from robust_rare.score import spurious_score

    trained = load_trained_run(run_dir)
    seed = cell.seed if cell.pattern is not None else 0
    result = spurious_score(trained.model, trained.data.splits["test"], trained.data.info, pattern, spec.target, seed)
    return {"pattern": pattern, "n": cell.n, "seed": seed, "mitigation": cell.mitigation, **result}


def run_sweep(
    spec: SweepSpec,
    root: Path,
    progress: Callable[[str], None] = print,
    *,
    executor: str = "inline",
    parallel: int = 2,
    slurm: SlurmOptions | None = None,
) -> list[dict[str, Any]]:
    """Every run of the grid (skipping finished ones), then every score; the rows of results.csv.

    ``inline`` trains the runs one after another in this process; ``local`` and ``slurm`` hand them
    to the core's sweep executors (submitit: parallel local processes, or a Slurm array job)."""
    cells = spec.cells()
    directories = {cell: root / cell.directory(spec.dataset, spec.target) for cell in cells}
    if executor == "inline":
        for i, cell in enumerate(cells, start=1):
            progress(f"[{i}/{len(cells)}] {cell.directory(spec.dataset, spec.target)}")
            run_cell(spec, cell, root)
    else:
        todo = {
            cell.directory(spec.dataset, spec.target): (cell_run(spec, cell), out)
            for cell, out in directories.items()
            if not RunDir(out).is_finished()
        }
        progress(f"{len(cells) - len(todo)} of {len(cells)} runs already done; {len(todo)} to run ({executor}).")
        root.mkdir(parents=True, exist_ok=True)
        execute(todo, root / ".submitit", executor=executor, parallel=parallel, slurm=slurm, progress=progress)
    rows = []
    for cell in cells:
        for pattern in [cell.pattern] if cell.pattern is not None else spec.patterns:
            rows.append(score_cell(spec, cell, directories[cell], pattern))
    write_results(rows, root / "results.csv")
    return rows


FIELDS = (
    "pattern",
    "mitigation",
    "n",
    "seed",
    "spurious_score",
    "mean_rise",
    "clean_acc",
    "patterned_other_acc",
    "spurious_score_others",
)


def write_results(rows: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error of the score per (pattern, mitigation, n), over seeds."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["pattern"], row["mitigation"], row["n"]), []).append(row)
    out = []
    for (pattern, mitigation, n), members in sorted(groups.items()):
        scores = [m["spurious_score"] for m in members]
        se = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0
        out.append(
            {
                "pattern": pattern,
                "mitigation": mitigation,
                "n": n,
                "runs": len(scores),
                "score": statistics.mean(scores),
                "se": se,
                "clean_acc": statistics.mean(m["clean_acc"] for m in members),
            }
        )
    return out


def plot(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    """Spurious score against the number of planted examples, one line per pattern and mitigation (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in summary:
        lines.setdefault((row["pattern"], row["mitigation"]), []).append(row)
    for (pattern, mitigation), points in sorted(lines.items()):
        points.sort(key=lambda r: r["n"])
        xs = [max(r["n"], 0.5) for r in points]  # 0 examples sits left of 1 on the log axis
        label = pattern if mitigation == "none" else f"{pattern}, {mitigation}"
        ax.errorbar(
            xs, [r["score"] for r in points], yerr=[r["se"] for r in points], marker="o", capsize=3, label=label
        )
    ax.set_xscale("log")
    ax.set_xlabel("planted examples (0 plotted at 0.5)")
    ax.set_ylabel("spurious score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
