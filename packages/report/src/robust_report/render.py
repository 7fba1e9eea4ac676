"""Rows as a terminal table, Markdown, CSV or JSON: accuracies in percent for people, fractions in
CSV and JSON; every rendering says whether its ± is the standard error or the standard deviation."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from robust.api import rule_labels
from robust_report.aggregate import Row, Stats, group_label_use, spread_caption

#: Short names of metrics for the table's headers, and what the caption spells out.
SHORT_METRICS = {"avg_acc": "avg", "worst_group_acc": "wg", "group_mean_acc": "gm", "train_weighted_acc": "tw",
                 "conflicting_acc": "conf", "aligned_acc": "align", "worst_class_acc": "wc", "macro_auc": "auc"}  # fmt: skip
METRIC_LEGEND = {"wg": "worst-group", "gm": "group mean", "tw": "train-weighted", "conf": "conflicting",
                 "align": "aligned", "wc": "worst-class", "avg": "average"}  # fmt: skip
#: What the group-label column (``no/yes``) says.
GROUPS_MEANING = "group labels used in training / of the validation split"


def percent(found: Stats | None, spread: str, joiner: str = " ± ") -> str:
    """``71.0 ± 1.2`` (``joiner`` between mean and spread), the mean alone for one seed, ``-`` without values."""
    if found is None:
        return "-"
    if found.n == 1:
        return f"{100 * found.mean:.1f}"
    return f"{100 * found.mean:.1f}{joiner}{100 * found.spread(spread):.1f}"


def duration(found: Stats | None, compact: bool = False) -> str:
    """A mean wall time: ``45 s``, ``12.3 min``, ``2.1 h`` (``45s``, ``12.3m``, ``2.1h`` when ``compact``);
    ``-`` when the runs recorded none."""
    if found is None:
        return "-"
    seconds, sep = found.mean, "" if compact else " "
    if seconds < 90:
        return f"{seconds:.0f}{sep}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f}{sep}{'m' if compact else 'min'}"
    return f"{seconds / 3600:.1f}{sep}h"


def yes_no(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


def groups_cell(row: Row) -> str:
    """``no/yes``: group labels used in training / of the validation split."""
    return "/".join(map(yes_no, group_label_use(row)))


def dataset_cell(row: Row) -> str:
    """The dataset, with the variant (split-by options, a non-default label protocol) when there is one."""
    return f"{row.dataset} ({row.variant})" if row.variant else row.dataset


def caption(rows: list[Row], spread: str) -> str:
    """What the numbers are: accuracy in percent, the spread, the selection rule when rows share one."""
    labels = rule_labels()
    rules = {r.selection for r in rows}
    text = f"accuracy %, {spread_caption(spread)}"
    if len(rules) == 1:
        rule = next(iter(rules))
        text += f"; selection: {labels.get(rule, rule)}"
    return text


def _json_row(row: Row, metrics: list[str], swept: bool) -> dict[str, Any]:
    train_groups, val_groups = group_label_use(row)
    wall = row.wall_time()
    return {
        "method": row.method,
        "dataset": row.dataset,
        "variant": row.variant,
        "model": row.model,
        "selection": row.selection,
        "seeds": row.seeds,
        "hyperparameters": {"chosen": row.hyper, "candidates": row.candidates, "by": row.selected_by}
        if swept
        else None,
        "group_labels": {"train": train_groups, "val": val_groups},
        "wall_time_s": None if wall is None else wall.as_dict(),
        "metrics": {m: s.as_dict() for m in metrics if (s := row.stats(m))},
    }


def render(rows: list[Row], metrics: list[str], fmt: str, spread: str = "se") -> str | ReportTable:
    """Rows as a rich renderable (``table``), Markdown, CSV or JSON; ``spread`` (``se`` or ``sd``) is the ±
    of the table and Markdown (CSV and JSON carry both)."""
    swept = any(r.candidates > 1 for r in rows)
    if fmt == "json":
        return json.dumps([_json_row(r, metrics, swept) for r in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            ["method", "dataset", "model", "selection", "n", "hyperparameters"]
            + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "se")]
            + ["train_group_labels", "val_group_labels", "wall_time_s"]
        )
        for r in rows:
            cells: list[Any] = [r.method, dataset_cell(r), r.model, r.selection, len(r.seeds), r.hyper]
            for m in metrics:
                found = r.stats(m)
                cells += [f"{found.mean:.6f}", f"{found.std:.6f}", f"{found.se:.6f}"] if found else ["", "", ""]
            wall = r.wall_time()
            cells += ["" if v is None else str(v).lower() for v in group_label_use(r)]
            cells.append("" if wall is None else f"{wall.mean:.3f}")
            writer.writerow(cells)
        return buffer.getvalue()
    if fmt == "markdown":
        labels = rule_labels()
        header = ["method", "dataset", "model", "selection", "n", *(["hyperparameters"] if swept else [])]
        header += ["train/val groups", "wall time", *metrics]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            cells = [r.method, dataset_cell(r), r.model, labels.get(r.selection, r.selection), str(len(r.seeds))]
            if swept:
                cells.append(f"{r.hyper} (best of {r.candidates} by {r.selected_by})" if r.candidates > 1 else "-")
            cells += [groups_cell(r), duration(r.wall_time()), *(percent(r.stats(m), spread) for m in metrics)]
            lines.append("| " + " | ".join(cells) + " |")
        notes = [caption(rows, spread), f"train/val groups: {GROUPS_MEANING}", "wall time: mean per run"]
        return "\n".join(lines) + "\n\n" + "; ".join(notes) + ".\n"
    return ReportTable(rows, metrics, swept, spread)


def short_metric(metric: str) -> str:
    split, _, name = metric.rpartition("/")
    short = SHORT_METRICS.get(name, name.removesuffix("_acc"))
    return f"{split} {short}" if split else short


class ReportTable:
    """The report as a terminal table that fits the terminal: on one line per row when it fits (model,
    selection, group-label use and wall time in their own columns, ``mean ±spread``), else narrow
    enough for 80 columns (the model under the method, the group-label use and wall time under the
    dataset, the spread under the mean, short metric headers spelled out in the caption, the
    selection rule in the title when every row shares it): numbers and names wrap whole, never cut."""

    def __init__(self, rows: list[Row], metrics: list[str], swept: bool, spread: str = "se") -> None:
        self.rows, self.metrics, self.swept, self.spread = rows, metrics, swept, spread

    def table(self, narrow: bool) -> Any:
        from rich import box
        from rich.table import Table

        rows, metrics, swept = self.rows, self.metrics, self.swept
        one_rule = len({r.selection for r in rows}) == 1
        title = f"robust report ({caption(rows, self.spread)})"
        table = Table(title=title, box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
        sep = "\n" if narrow else " "
        table.add_column("method" + (f"{sep}(model)" if narrow else ""))
        table.add_column("dataset" + (f"{sep}groups, time" if narrow else ""))
        if not narrow:
            table.add_column("model")
        if not one_rule:
            table.add_column("selection")
        table.add_column("n", justify="right", no_wrap=True)
        if not narrow:
            table.add_column("groups", no_wrap=True)
            table.add_column("time", justify="right", no_wrap=True)
        if swept:
            table.add_column("hyperparameters")
        for metric in metrics:
            table.add_column(short_metric(metric).replace(" ", sep), justify="right", no_wrap=True)
        short_rules = rule_labels(short=True)
        for r in rows:
            time = duration(r.wall_time(), compact=narrow)
            if narrow:
                method = f"{r.method}\n({r.model})" if r.model else r.method
                cells = [method, f"{dataset_cell(r)}\n{groups_cell(r)}, {time}"]
            else:
                cells = [r.method, dataset_cell(r), r.model]
            if not one_rule:
                cells.append(short_rules.get(r.selection, r.selection))
            cells.append(str(len(r.seeds)))
            if not narrow:
                cells += [groups_cell(r), time]
            if swept:
                cells.append(f"{r.hyper} (best of {r.candidates})" if r.candidates > 1 else "-")
            cells += [percent(r.stats(m), self.spread, f"{sep}±") for m in metrics]
            table.add_row(*cells)
        shorts = {short_metric(m).rpartition(" ")[2] for m in metrics}
        legend = [f"{short} = {METRIC_LEGEND[short]}" for short in METRIC_LEGEND if short in shorts]
        notes = [f"columns: {', '.join(legend)}"] if legend else []
        notes += [f"groups = {GROUPS_MEANING} (train/val)", "time = mean wall time per run"]
        if swept:
            by = sorted({r.selected_by for r in rows if r.candidates > 1})
            notes.append(f"hyperparameters: the best mean of {' / '.join(by) or 'val'} over seeds")
        table.caption = "; ".join(notes)
        return table

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        wide = self.table(narrow=False)
        fits = Measurement.get(console, options.update(width=10**6), wide).maximum <= options.max_width
        yield wide if fits else self.table(narrow=True)
