"""What ``robust run`` prints when a run ends: its summary.json as tables, metrics by selection rule.

Kept apart from the engine so that the engine stays free of rich's tables; aggregating many runs
is ``robust report`` (robust-report).
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

from robust.selection import SHORT_LABELS


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
