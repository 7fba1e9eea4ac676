"""Reading run directories back and aggregating them: mean ± std over seeds, per method and dataset.

Torch-free, so that ``robust report`` is quick.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from robust.errors import RunDirError
from robust.results import SUMMARY
from robust.selection import LABELS

SHORT_LABELS = {
    "best_val_auc": "val auc",
    "best_val_worst_group": "val wg",
    "best_val_worst_class": "val wc",
    "best_val_avg": "val avg",
    "last": "last",
    "oracle_test": "oracle",
}
DEFAULT_METRICS = (
    "test/avg_acc",
    "test/worst_group_acc",
    "test/group_mean_acc",
    "test/train_weighted_acc",
    "test/conflicting_acc",
    "val/worst_group_acc",
    "val/avg_acc",
)
FORMATS = ("table", "markdown", "csv", "json")


def find_summaries(paths: list[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every finished run (a directory with summary.json) under ``paths``."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for root in map(Path, paths):
        if not root.exists():
            raise RunDirError(
                f"{str(root)!r} does not exist. Pass run directories (or folders that contain them) to `robust report`."
            )
        candidates = [root / SUMMARY] if (root / SUMMARY).is_file() else sorted(root.rglob(SUMMARY))
        for path in candidates:
            try:
                found.append((path.parent, json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, json.JSONDecodeError) as exc:
                raise RunDirError(
                    f"Cannot read {str(path)!r} ({exc}); it is not a summary written by robust. Remove it or the run directory."
                ) from None
    if not found:
        raise RunDirError(
            f"No finished runs under {', '.join(map(str, paths))}: a finished run directory holds {SUMMARY}. "
            "Interrupted runs can be finished with `robust run ... --resume --out DIR`."
        )
    return found


@dataclass
class Row:
    """One (method, dataset, model) cell: a list of values per metric, one per seed. ``hyper`` names the
    hyperparameters chosen among ``candidates`` configurations (a sweep), or is empty."""

    method: str
    dataset: str
    model: str
    selection: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    hyper: str = ""
    candidates: int = 1
    selected_by: str = ""

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        values = self.values.get(metric)
        if not values:
            return None
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


IGNORED = {"seed", "versions", "plugins", "data_root", "device"}


def _flat_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.json flattened (``method.lr``...), without what does not define the experiment."""
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text(encoding="utf-8"))
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in IGNORED:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": json.dumps(v, sort_keys=True) for k, v in value.items()})
        else:
            flat[key] = json.dumps(value, sort_keys=True)
    return flat


def aggregate(summaries: list[tuple[Path, dict[str, Any]]], selection: str | None = None) -> list[Row]:
    """Group runs by method, dataset and model; collect each metric under the chosen selection rule.

    Where runs of one method, dataset and model differ in configuration beyond the seed (a sweep),
    the configuration is chosen as DomainBed and SubpopBench do: the best mean over seeds of the
    validation worst-group accuracy when the validation groups are known, of the validation average
    accuracy when not; its test metrics are reported.
    """
    groups: dict[tuple[str, str, str], dict[str, Row]] = defaultdict(dict)
    configs: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for run_dir, summary in summaries:
        rule = selection or summary.get("default_selection", "last")
        chosen = summary.get("selection", {}).get(rule)
        if chosen is None:
            continue
        key = (summary["method"], summary["dataset"], summary.get("model", ""))
        flat = _flat_config(run_dir)
        hp = json.dumps(flat, sort_keys=True)
        configs[key][hp] = flat
        row = groups[key].setdefault(hp, Row(*key, selection=rule))
        row.seeds.append(summary.get("seed", 0))
        for metric, value in chosen["metrics"].items():
            row.values[metric].append(float(value))
        if summary.get("protocol", {}).get("val_group_labels"):
            row.selected_by = "val/worst_group_acc"
    rows = []
    for key in sorted(groups):
        candidates = groups[key]
        if len(candidates) == 1:
            rows.append(next(iter(candidates.values())))
            continue
        best_hp, best = max(candidates.items(), key=lambda item: _validation_score(item[1]))
        options = configs[key]
        differing = sorted(k for k in options[best_hp] if len({c.get(k) for c in options.values()}) > 1)
        best.hyper = ", ".join(f"{k.removeprefix('method.')}={json.loads(options[best_hp][k])}" for k in differing)
        best.candidates = len(candidates)
        best.selected_by = best.selected_by or "val/avg_acc"
        rows.append(best)
    return rows


def _validation_score(row: Row) -> float:
    metric = row.selected_by or "val/avg_acc"
    values = row.values.get(metric) or row.values.get("val/avg_acc") or [float("-inf")]
    return statistics.fmean(values)


def pick_metrics(rows: list[Row], requested: tuple[str, ...] | list[str] = ()) -> list[str]:
    if requested:
        return list(requested)
    return [m for m in DEFAULT_METRICS if any(m in r.values for r in rows)]


def _cell(row: Row, metric: str) -> str:
    stats = row.mean_std(metric)
    if stats is None:
        return "-"
    mean, std = stats
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(row.values[metric]) > 1 else f"{100 * mean:.1f}"


def render(rows: list[Row], metrics: list[str], fmt: str) -> str | Table:
    """Rows as a rich Table, Markdown, CSV or JSON (accuracies in percent for humans, fractions in CSV/JSON)."""
    swept = any(r.candidates > 1 for r in rows)
    header = ["method", "dataset", "model", "selection", "n", *(["hyperparameters"] if swept else []), *metrics]
    if fmt == "json":
        data = [
            {
                "method": r.method,
                "dataset": r.dataset,
                "model": r.model,
                "selection": r.selection,
                "seeds": r.seeds,
                "hyperparameters": {"chosen": r.hyper, "candidates": r.candidates, "by": r.selected_by}
                if swept
                else None,
                "metrics": {
                    m: {"mean": s[0], "std": s[1], "n": len(r.values[m])} for m in metrics if (s := r.mean_std(m))
                },
            }
            for r in rows
        ]
        return json.dumps(data, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            ["method", "dataset", "model", "selection", "n", "hyperparameters"]
            + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
        )
        for r in rows:
            cells: list[Any] = [r.method, r.dataset, r.model, r.selection, len(r.seeds), r.hyper]
            for m in metrics:
                stats = r.mean_std(m)
                cells += [f"{stats[0]:.6f}", f"{stats[1]:.6f}"] if stats else ["", ""]
            writer.writerow(cells)
        return buffer.getvalue()
    body = [
        [
            r.method,
            r.dataset,
            r.model,
            LABELS.get(r.selection, r.selection),
            str(len(r.seeds)),
            *([f"{r.hyper} (best of {r.candidates} by {r.selected_by})" if r.candidates > 1 else "-"] if swept else []),
            *(_cell(r, m) for m in metrics),
        ]
        for r in rows
    ]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n"
    table = Table(title="robust report (accuracy %, mean ± std over seeds)")
    for name in header:
        table.add_column(name, justify="right" if "/" in name or name == "n" else "left")
    for cells in body:
        table.add_row(*cells)
    return table


def summary_table(summary: dict[str, Any]) -> Table:
    """One run's final metrics: rows are metrics, columns are selection rules."""
    selection = summary["selection"]
    rules = list(selection)
    keys: list[str] = []
    for rule in rules:
        for key in selection[rule]["metrics"]:
            name = key.split("/", 1)[1]
            if key not in keys and not name.startswith(("group_acc_", "class_acc_")):
                keys.append(key)
    keys.sort(key=lambda k: (not k.startswith("val/"), k))
    table = Table(
        title=f"{summary['method']} on {summary['dataset']} ({summary['model']}, seed {summary['seed']}): accuracy %"
    )
    table.add_column("metric", no_wrap=True)
    for rule in rules:
        marker = " *" if rule == summary.get("default_selection") else ""
        table.add_column(SHORT_LABELS.get(rule, rule) + marker, justify="right", no_wrap=True)
    for key in keys:
        cells = []
        for rule in rules:
            value = selection[rule]["metrics"].get(key)
            cells.append("-" if value is None else f"{100 * value:.1f}")
        table.add_row(key, *cells)
    table.caption = (
        "columns: best val worst-group / worst-class / average accuracy, last evaluation, oracle (max test "
        "accuracy: reads the test set, not a fair selection rule); * default selection"
    )
    return table
