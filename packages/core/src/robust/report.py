"""Reading run directories back and aggregating them: mean ± std over seeds, per method and dataset.

Torch-free, so that ``robust report`` is quick.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table

from robust.errors import RunDirError
from robust.papers import format_value
from robust.results import SUMMARY
from robust.selection import LABELS

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.papers import PaperResult

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
            found.append((path.parent, check_summary(path, _read_json(path, "a run's final metrics"))))
    if not found:
        raise RunDirError(
            f"No finished runs under {', '.join(map(str, paths))}: a finished run directory holds {SUMMARY}. "
            "Interrupted runs can be finished with `robust run ... --resume --out DIR`."
        )
    return found


@dataclass
class Row:
    """One (method, dataset, model) cell: a list of values per metric, one per seed. ``hyper`` names the
    hyperparameters chosen among ``candidates`` configurations (a sweep), or is empty. ``variant`` names
    the dataset options the rows were split by (``conflict_pct=1``), ``options`` holds the runs' dataset
    options, ``protocol`` their summary's protocol and ``by_rule`` the values under every selection rule."""

    method: str
    dataset: str
    model: str
    selection: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    hyper: str = ""
    candidates: int = 1
    selected_by: str = ""
    variant: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    by_rule: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    #: The runs' opt-outs of their paper's mechanism (``allow_no_masks: ...``, :mod:`robust_counterfactual.fidelity`).
    opt_outs: list[str] = field(default_factory=list)

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        values = self.values.get(metric)
        if not values:
            return None
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


IGNORED = {"seed", "versions", "plugins", "data_root", "device"}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a run directory; RunDirError naming the file when it is unreadable or not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        text = str(exc).strip()
        raise RunDirError(
            f"Cannot read {str(path)!r} ({text.splitlines()[0] if text else type(exc).__name__}); it should hold "
            f"{what}, written by robust. Restore it from a backup, or move the run directory out of the folders "
            "you report on."
        ) from None
    if not isinstance(data, dict):
        raise RunDirError(
            f"{str(path)!r} holds a JSON {type(data).__name__}, not an object with {what}. Restore it from a backup, "
            "or move the run directory out of the folders you report on."
        )
    return data


def _damaged(path: Path, key: str, problem: str) -> RunDirError:
    return RunDirError(
        f"{str(path)!r} is damaged: {key} {problem}. Restore it from a backup, or move the run directory out of the "
        "folders you report on."
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_summary(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` when it has what a report reads (names, selection rules with numeric metrics, protocol)."""
    for key in ("method", "dataset"):
        if not isinstance(summary.get(key), str):
            raise _damaged(path, repr(key), "is missing or not a string")
    for key, kind, noun in (("model", str, "a string"), ("default_selection", str, "a string"),
                            ("protocol", dict, "an object"), ("selection", dict, "an object")):  # fmt: skip
        if key in summary and not isinstance(summary[key], kind):
            raise _damaged(path, repr(key), f"is not {noun} (got {type(summary[key]).__name__})")
    if "seed" in summary and not (isinstance(summary["seed"], int) and not isinstance(summary["seed"], bool)):
        raise _damaged(path, "'seed'", f"is not an integer (got {summary['seed']!r})")
    for rule, record in summary.get("selection", {}).items():
        metrics = record.get("metrics") if isinstance(record, dict) else None
        if not isinstance(metrics, dict):
            raise _damaged(path, f"selection.{rule}", "has no object 'metrics'")
        bad = next((m for m, v in metrics.items() if not _is_number(v)), None)
        if bad is not None:
            raise _damaged(path, f"selection.{rule}.metrics.{bad}", f"is not a number (got {metrics[bad]!r})")
    return summary


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    config = _read_json(path, "the run's resolved config")
    if config.get("dataset") is not None and not isinstance(config["dataset"], dict):
        raise _damaged(path, "'dataset'", f"is not an object (got {type(config['dataset']).__name__})")
    return config


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json flattened (``method.lr``...), without what does not define the experiment."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in IGNORED:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": json.dumps(v, sort_keys=True) for k, v in value.items()})
        else:
            flat[key] = json.dumps(value, sort_keys=True)
    return flat


def aggregate(
    summaries: list[tuple[Path, dict[str, Any]]],
    selection: str | None = None,
    split_by: Mapping[str, Collection[str]] | None = None,
) -> list[Row]:
    """Group runs by method, dataset and model; collect each metric under the chosen selection rule.

    Where runs of one method, dataset and model differ in configuration beyond the seed (a sweep),
    the configuration is chosen as DomainBed and SubpopBench do: the best mean over seeds of the
    validation worst-group accuracy when the validation groups are known, of the validation average
    accuracy when not; its test metrics are reported. Runs on other data are other rows, never
    candidates: dataset options that differ between runs of a dataset (``conflict_pct``, a CSV
    dataset's ``metadata``) name the row, as do ``split_by``'s (``{"cmnist": ["conflict_pct"]}``),
    and so does a non-default label protocol.
    """
    groups: dict[tuple[Any, ...], dict[str, Row]] = defaultdict(dict)
    configs: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = defaultdict(dict)
    run_configs = {run_dir: _read_config(run_dir) for run_dir, _ in summaries}
    varying = _varying_dataset_options(summaries, run_configs)
    for run_dir, summary in summaries:
        rule = selection or summary.get("default_selection", "last")
        chosen = summary.get("selection", {}).get(rule)
        if chosen is None:
            continue
        config = run_configs[run_dir]
        options = {k: v for k, v in (config.get("dataset") or {}).items() if k != "name"}
        split = sorted(set((split_by or {}).get(summary["dataset"], ())) | varying.get(summary["dataset"], set()))
        variant = ", ".join(
            [*(f"{k}={format_value(options[k])}" for k in split if k in options), *protocol_tags(summary)]
        )
        key = (summary["method"], summary["dataset"], summary.get("model", ""), variant)
        flat = {k: v for k, v in _flat_config(config).items() if k not in PROTOCOL_KEYS}
        hp = json.dumps(flat, sort_keys=True)
        configs[key][hp] = flat
        row = groups[key].setdefault(
            hp, Row(*key[:3], selection=rule, variant=variant, options=options, protocol=summary.get("protocol", {}))
        )
        row.seeds.append(summary.get("seed", 0))
        for opt_out in opt_out_labels(summary):
            if opt_out not in row.opt_outs:
                row.opt_outs.append(opt_out)
        for metric, value in chosen["metrics"].items():
            row.values[metric].append(float(value))
        for other, record in summary.get("selection", {}).items():
            for metric, value in record.get("metrics", {}).items():
                row.by_rule[other][metric].append(float(value))
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


def _varying_dataset_options(
    summaries: list[tuple[Path, dict[str, Any]]], configs: dict[Path, dict[str, Any]]
) -> dict[str, set[str]]:
    """Per dataset, the options whose value differs between its runs (other data, not a hyperparameter)."""
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run_dir, summary in summaries:
        options = {k: v for k, v in (configs[run_dir].get("dataset") or {}).items() if k not in ("name", "groups")}
        seen[summary["dataset"]].append(options)
    varying = {}
    for dataset, runs in seen.items():
        keys = {k for options in runs for k in options}
        varying[dataset] = {k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in runs}) > 1}
    return varying


#: Config keys of the label protocol: runs that differ in them are different experiments (separate
#: rows), not hyperparameter candidates (their validation scores are not comparable).
PROTOCOL_KEYS = {"train_attr", "val_attr", "dataset.groups"}


def protocol_tags(summary: dict[str, Any]) -> list[str]:
    """How a run's label protocol differs from the default, for a row's name."""
    protocol = summary.get("protocol", {})
    tags = []
    if protocol.get("train_attr") == "no":
        tags.append("train groups withheld")
    if protocol.get("val_attr") == "no":
        tags.append("val groups withheld")
    if protocol.get("inferred_groups"):
        tags.append("inferred groups")
    tags += [f"opt-out {option}" for option in sorted({o.get("option", "?") for o in _opt_outs(summary)})]
    return tags


def _opt_outs(summary: dict[str, Any]) -> list[dict[str, str]]:
    opt_outs = summary.get("opt_outs") or []
    return [o for o in opt_outs if isinstance(o, dict)] if isinstance(opt_outs, list) else []


def opt_out_labels(summary: dict[str, Any]) -> list[str]:
    """``option: detail`` for each part of its paper's method a run opted out of."""
    return [f"{o.get('option', '?')}: {o.get('detail', '')}" for o in _opt_outs(summary)]


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


def _dataset_cell(row: Row) -> str:
    """The dataset, with the variant (split-by options, a non-default label protocol) when there is one."""
    return f"{row.dataset} ({row.variant})" if row.variant else row.dataset


def render(rows: list[Row], metrics: list[str], fmt: str) -> str | ReportTable:
    """Rows as a rich Table, Markdown, CSV or JSON (accuracies in percent for humans, fractions in CSV/JSON)."""
    swept = any(r.candidates > 1 for r in rows)
    header = ["method", "dataset", "model", "selection", "n", *(["hyperparameters"] if swept else []), *metrics]
    if fmt == "json":
        data = [
            {
                "method": r.method,
                "dataset": r.dataset,
                "variant": r.variant,
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
            cells: list[Any] = [r.method, _dataset_cell(r), r.model, r.selection, len(r.seeds), r.hyper]
            for m in metrics:
                stats = r.mean_std(m)
                cells += [f"{stats[0]:.6f}", f"{stats[1]:.6f}"] if stats else ["", ""]
            writer.writerow(cells)
        return buffer.getvalue()
    body = [
        [
            r.method,
            _dataset_cell(r),
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
    return ReportTable(rows, metrics, swept)


#: Short names of metrics for the table's headers, and what the caption spells out.
SHORT_METRICS = {"avg_acc": "avg", "worst_group_acc": "wg", "group_mean_acc": "gm", "train_weighted_acc": "tw",
                 "conflicting_acc": "conf", "aligned_acc": "align", "worst_class_acc": "wc", "macro_auc": "auc"}  # fmt: skip
METRIC_LEGEND = {"wg": "worst-group", "gm": "group mean", "tw": "train-weighted", "conf": "conflicting",
                 "align": "aligned", "wc": "worst-class", "avg": "average"}  # fmt: skip


def _short_metric(metric: str) -> str:
    split, _, name = metric.rpartition("/")
    short = SHORT_METRICS.get(name, name.removesuffix("_acc"))
    return f"{split} {short}" if split else short


class ReportTable:
    """The report as a terminal table that fits the terminal: on one line per row when it fits (model
    and selection in their own columns, ``mean ±std``), else narrow enough for 80 columns (the model
    under the method, the std under the mean, short metric headers spelled out in the caption, the
    selection rule in the title when every row shares it): numbers and names wrap whole, never cut."""

    def __init__(self, rows: list[Row], metrics: list[str], swept: bool) -> None:
        self.rows, self.metrics, self.swept = rows, metrics, swept

    def table(self, narrow: bool) -> Table:
        from rich import box

        rows, metrics, swept = self.rows, self.metrics, self.swept
        rules = {r.selection for r in rows}
        one_rule = len(rules) == 1
        title = "robust report (accuracy %, mean ±std over seeds"
        if one_rule:
            rule = next(iter(rules))
            title += f"; selection: {LABELS.get(rule, rule)}"
        table = Table(title=title + ")", box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
        sep = "\n" if narrow else " "
        table.add_column("method" + (f"{sep}(model)" if narrow else ""))
        table.add_column("dataset")
        if not narrow:
            table.add_column("model")
        if not one_rule:
            table.add_column("selection")
        table.add_column("n", justify="right", no_wrap=True)
        if swept:
            table.add_column("hyperparameters")
        for metric in metrics:
            table.add_column(_short_metric(metric).replace(" ", sep), justify="right", no_wrap=True)
        for r in rows:
            method = f"{r.method}\n({r.model})" if narrow and r.model else r.method
            cells = [method, _dataset_cell(r)] + ([] if narrow else [r.model])
            if not one_rule:
                cells.append(SHORT_LABELS.get(r.selection, r.selection))
            cells.append(str(len(r.seeds)))
            if swept:
                cells.append(f"{r.hyper} (best of {r.candidates})" if r.candidates > 1 else "-")
            for metric in metrics:
                stats = r.mean_std(metric)
                if stats is None:
                    cells.append("-")
                elif len(r.values[metric]) > 1:
                    cells.append(f"{100 * stats[0]:.1f}{sep}±{100 * stats[1]:.1f}")
                else:
                    cells.append(f"{100 * stats[0]:.1f}")
            table.add_row(*cells)
        shorts = {_short_metric(m).rpartition(" ")[2] for m in metrics}
        legend = [f"{short} = {METRIC_LEGEND[short]}" for short in METRIC_LEGEND if short in shorts]
        notes = [f"columns: {', '.join(legend)}"] if legend else []
        if swept:
            by = sorted({r.selected_by for r in rows if r.candidates > 1})
            notes.append(f"hyperparameters: the best mean of {' / '.join(by) or 'val'} over seeds")
        table.caption = "; ".join(notes) or None
        return table

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        wide = self.table(narrow=False)
        fits = Measurement.get(console, options.update(width=10**6), wide).maximum <= options.max_width
        yield wide if fits else self.table(narrow=True)


# -- against the papers ------------------------------------------------------------------------

NO_NUMBER = "—"
COMPARISON_CSV = (
    *("method", "dataset", "variant", "model", "selection", "n", "metric"),
    *("ours_mean", "ours_std", "paper_value", "paper_std", "difference", "source", "note"),
)


def paper_split_options(results: list[PaperResult]) -> dict[str, set[str]]:
    """Per dataset, the options the papers' numbers distinguish (rows of a comparison are split by them)."""
    split: dict[str, set[str]] = defaultdict(set)
    for result in results:
        split[result.dataset].update(result.dataset_options)
    return dict(split)


def _pct(value: float) -> str:
    """A paper's number as printed there (up to two decimals)."""
    return f"{100 * value:.2f}".rstrip("0").rstrip(".")


def _ours(values: list[float] | None) -> tuple[float, float, int] | None:
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def _ours_text(stats: tuple[float, float, int] | None) -> str:
    if stats is None:
        return "-"
    mean, std, n = stats
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def _protocol_notes(row: Row, paper: PaperResult) -> list[str]:
    """Where the run's protocol is not the paper's: selection rule, group labels, model."""
    notes = []
    if paper.selection == "unknown":
        notes.append("the paper does not state its model selection")
    elif paper.selection != row.selection:
        note = f"paper selects by {LABELS[paper.selection]}, ours by {LABELS.get(row.selection, row.selection)}"
        under = _ours(row.by_rule.get(paper.selection, {}).get(paper.metric))
        if under is not None:
            note += f"; ours under the paper's rule: {_ours_text(under)} ({100 * (under[0] - paper.value):+.1f})"
        notes.append(note)
    train_labels = row.protocol.get("train_group_labels")
    if paper.train_group_labels is not None and train_labels is not None and paper.train_group_labels != train_labels:
        notes.append(
            f"paper trains {'with' if paper.train_group_labels else 'without'} group labels, ours "
            f"{'with' if train_labels else 'without'}"
        )
    val_labels = row.protocol.get("val_group_labels")
    if val_labels is not None:
        val_labels = bool(val_labels) and row.selection == "best_val_worst_group"
    if (
        paper.val_group_labels is not None
        and val_labels is not None
        and paper.val_group_labels != val_labels
        and paper.selection in (row.selection, "unknown")
    ):
        notes.append(
            f"paper {'uses' if paper.val_group_labels else 'does not use'} val group labels, ours "
            f"{'does' if val_labels else 'does not'}"
        )
    if paper.model and row.model and paper.model != row.model:
        notes.append(f"paper's model {paper.model}, ours {row.model}")
    if not paper.verified:
        notes.append("paper number not checked against the paper's text")
    return notes


def compare_with_papers(
    rows: list[Row], results: list[PaperResult], metrics: tuple[str, ...] | list[str] = ()
) -> list[dict[str, Any]]:
    """One record per (row, paper number) that match, or one per row without any: ours, the paper's, the
    difference and where the protocols differ. ``metrics`` keeps only the papers' numbers of those metrics."""
    records = []
    for row in rows:
        base = {
            "method": row.method,
            "dataset": row.dataset,
            "variant": row.variant,
            "model": row.model,
            "selection": row.selection,
            "n": len(row.seeds),
        }
        same = [r for r in results if r.method == row.method and r.dataset == row.dataset]
        matching = [r for r in same if r.matches(row.method, row.dataset, row.options)]
        if metrics:
            matching = [r for r in matching if r.metric in metrics]
        if row.opt_outs and matching:  # the paper's number is for the full method: never beside a reduced one
            note = "not compared with the paper: the runs opted out of its method (" + "; ".join(row.opt_outs) + ")"
            records.append(_unmatched(base, row, [matching[0].metric], note))
            continue
        for paper in matching:
            ours = _ours(row.values.get(paper.metric))
            notes = [] if ours is not None else [f"the runs did not record {paper.metric}"]
            records.append(
                {
                    **base,
                    "metric": paper.metric,
                    "ours": None if ours is None else {"mean": ours[0], "std": ours[1], "n": ours[2]},
                    "paper": {"value": paper.value, "std": paper.std},
                    "difference": None if ours is None else ours[0] - paper.value,
                    "source": paper.source,
                    "paper_selection": paper.selection,
                    "paper_note": paper.note,
                    "note": "; ".join(notes + _protocol_notes(row, paper)),
                }
            )
        if matching:
            continue
        shown = [m for m in (metrics or DEFAULT_METRICS) if m in row.values][:1]
        if row.dataset.startswith("synthetic-"):
            note = "synthetic stand-in: no paper number for this dataset"
        elif same:
            available = sorted({r.options_label for r in same} - {""})
            note = "no paper number for these dataset options" + (
                f" (the paper's: {'; '.join(available)})" if available else ""
            )
            if metrics and any(r.matches(row.method, row.dataset, row.options) for r in same):
                note = "no paper number for the metrics asked for"
        elif any(r.method == row.method for r in results):
            note = "no paper number for this dataset"
        else:
            note = "no paper number registered for this method"
        records.append(_unmatched(base, row, shown, note))
    return records


def _unmatched(base: dict[str, Any], row: Row, shown: list[str], note: str) -> dict[str, Any]:
    """A comparison record without a paper number: ours on the first of ``shown``, and why."""
    ours = _ours(row.values.get(shown[0])) if shown else None
    return {
        **base,
        "metric": shown[0] if shown else "",
        "ours": None if ours is None else {"mean": ours[0], "std": ours[1], "n": ours[2]},
        "paper": None,
        "difference": None,
        "source": "",
        "paper_selection": None,
        "paper_note": "",
        "note": note,
    }


def render_comparison(records: list[dict[str, Any]], fmt: str) -> str | Table:
    """The comparison as a rich Table, Markdown, CSV or JSON (percent for humans, fractions in CSV/JSON)."""
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COMPARISON_CSV)
        for r in records:
            ours, paper = r["ours"] or {}, r["paper"] or {}
            difference = "" if r["difference"] is None else r["difference"]
            writer.writerow(
                [
                    *(r[key] for key in COMPARISON_CSV[:7]),
                    *(ours.get("mean", ""), ours.get("std", ""), paper.get("value", ""), paper.get("std") or ""),
                    *(difference, r["source"], r["note"]),
                ]
            )
        return buffer.getvalue()
    header = ["method", "dataset", "model", "selection", "n", "metric", "ours", "paper", "Δ (points)", "source", "note"]
    body = []
    for r in records:
        ours = r["ours"]
        paper = r["paper"]
        if paper is None:
            paper_text = NO_NUMBER
        else:
            paper_text = _pct(paper["value"]) + (f" ± {_pct(paper['std'])}" if paper["std"] is not None else "")
        body.append(
            [
                r["method"],
                r["dataset"] + (f" ({r['variant']})" if r["variant"] else ""),
                r["model"],
                LABELS.get(r["selection"], r["selection"]),
                str(r["n"]),
                r["metric"] or "-",
                _ours_text(None if ours is None else (ours["mean"], ours["std"], ours["n"])),
                paper_text,
                NO_NUMBER if r["difference"] is None else f"{100 * r['difference']:+.1f}",
                r["source"] or NO_NUMBER,
                r["note"] or "",
            ]
        )
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in body]
        return "\n".join(lines) + "\n"
    table = Table(title="robust report against the papers (accuracy %; Δ = ours − paper, in points)")
    for name in header:
        table.add_column(name, justify="right" if name in ("n", "ours", "paper", "Δ (points)") else "left")
    for cells in body:
        table.add_row(*cells)
    return table


def is_percent_metric(key: str) -> bool:
    """Accuracies, AUCs and accuracy gaps (``test/bg_gap``) are fractions shown in percent; losses and
    anything else are plain numbers."""
    name = key.rsplit("/", 1)[-1]
    return name.endswith(("acc", "auc", "_gap")) or "_acc_" in name


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """One run's final metrics, rows are metrics and columns selection rules: the accuracies (in %),
    then, in a table of their own, the losses and other values (plain numbers)."""
    selection = summary["selection"]
    rules = list(selection)
    keys: list[str] = []
    for rule in rules:
        for key in selection[rule]["metrics"]:
            name = key.split("/", 1)[1]
            if key not in keys and not name.startswith(("group_acc_", "class_acc_")):
                keys.append(key)
    keys.sort(key=lambda k: (not k.startswith("val/"), k))
    about = f"{summary['method']} on {summary['dataset']} ({summary['model']}, seed {summary['seed']})"
    tables = []
    for percent, title in ((True, f"{about}: accuracy %"), (False, f"{about}: losses and other values")):
        shown = [k for k in keys if is_percent_metric(k) == percent]
        if not shown:
            continue
        table = Table(title=title)
        table.add_column("metric", no_wrap=True)
        for rule in rules:
            marker = " *" if rule == summary.get("default_selection") else ""
            table.add_column(SHORT_LABELS.get(rule, rule) + marker, justify="right", no_wrap=True)
        for key in shown:
            cells = []
            for rule in rules:
                value = selection[rule]["metrics"].get(key)
                cells.append("-" if value is None else f"{100 * value:.1f}" if percent else f"{value:.4g}")
            table.add_row(key, *cells)
        tables.append(table)
    if tables:
        tables[0].caption = (
            "columns: best val worst-group / worst-class / average accuracy, last evaluation, oracle (max test "
            "accuracy: reads the test set, not a fair selection rule); * default selection"
        )
    return tables


def summary_table(summary: dict[str, Any]) -> Group:
    """:func:`summary_tables` as one renderable."""
    return Group(*summary_tables(summary))
