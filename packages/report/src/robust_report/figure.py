"""``robust report --figure PATH.png``: the table drawn as bars, one panel per dataset, one group of bars
per metric, one bar per method with its spread as an error bar. matplotlib (the ``figure`` extra) loads
only when a figure is asked for; the Agg canvas draws it without a display or pyplot's global state."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from robust.api import atomic_write, rule_labels
from robust_report.aggregate import Row, spread_caption
from robust_report.render import caption, dataset_cell

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

PANELS_PER_LINE = 3


def bar_label(row: Row, panel: list[Row]) -> str:
    """The method, with the model and selection rule where the panel's rows differ in them."""
    label = row.method
    if len({r.model for r in panel}) > 1 and row.model:
        label += f" ({row.model})"
    if len({r.selection for r in panel}) > 1:
        label += f", {rule_labels(short=True).get(row.selection, row.selection)}"
    return label


def tick_label(metric: str) -> str:
    """A metric under its bars, spelled out (``test/train_weighted_acc`` -> ``test train weighted``):
    the table's abbreviations are explained in its caption, which a figure does not have."""
    split, _, name = metric.rpartition("/")
    return " ".join(part for part in (split, name.removesuffix("_acc").replace("_", " ")) if part)


def draw(rows: list[Row], metrics: list[str], spread: str = "se") -> Figure:
    """The figure of ``rows``: heights are means in percent, error bars the ``spread`` (``se`` or ``sd``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels: dict[str, list[Row]] = {}
    for row in rows:
        panels.setdefault(dataset_cell(row), []).append(row)
    colours = {method: f"C{i % 10}" for i, method in enumerate(sorted({r.method for r in rows}))}
    columns = min(PANELS_PER_LINE, len(panels))
    lines = math.ceil(len(panels) / columns)
    widest = max(len(p) for p in panels.values()) * max(len(metrics), 1)
    figure = Figure(figsize=(columns * min(max(4.0, 1.5 + 0.3 * widest), 12.0), 1.0 + 3.6 * lines), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax, (name, panel) in zip(axes, panels.items(), strict=False):
        shown = [m for m in metrics if any(r.stats(m) for r in panel)]
        width = 0.8 / len(panel)
        for i, row in enumerate(panel):
            found = [(x, s) for x, m in enumerate(shown) if (s := row.stats(m)) is not None]
            ax.bar(
                [x - 0.4 + width * (i + 0.5) for x, _ in found],
                [100 * s.mean for _, s in found],
                width,
                yerr=[100 * s.spread(spread) for _, s in found],
                capsize=3,
                color=colours[row.method],
                label=bar_label(row, panel),
            )
        ax.set_xticks(range(len(shown)), [tick_label(m) for m in shown], rotation=30, ha="right")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(f"accuracy % ({spread_caption(spread)})", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    figure.suptitle(
        textwrap.fill(f"robust report ({caption(rows, spread)})", int(14 * figure.get_figwidth())), fontsize=9
    )
    figure.set_layout_engine("constrained")
    return figure


def save(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` as a PNG, atomically: a reader never sees half a file."""
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
