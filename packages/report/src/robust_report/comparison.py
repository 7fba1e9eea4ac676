"""Rows set beside the numbers their methods' papers report (``robust report --against-paper``): ours,
the paper's, the difference, and a note wherever the two protocols differ."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from robust.api import rule_labels
from robust_report.aggregate import DEFAULT_METRICS, Row, Stats, group_label_use, spread_caption, stats
from robust_report.render import percent

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import PaperResult

NO_NUMBER = "—"
COMPARISON_CSV = (
    *("method", "dataset", "variant", "model", "selection", "n", "metric"),
    *("ours_mean", "ours_std", "ours_se", "paper_value", "paper_std", "difference", "source", "note"),
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


def _protocol_notes(row: Row, paper: PaperResult, spread: str) -> list[str]:
    """Where the run's protocol is not the paper's: selection rule, group labels, model."""
    labels = rule_labels()
    notes = []
    if paper.selection == "unknown":
        notes.append("the paper does not state its model selection")
    elif paper.selection != row.selection:
        note = f"paper selects by {labels[paper.selection]}, ours by {labels.get(row.selection, row.selection)}"
        under = stats(row.by_rule.get(paper.selection, {}).get(paper.metric))
        if under is not None:
            note += f"; ours under the paper's rule: {percent(under, spread)} ({100 * (under.mean - paper.value):+.1f})"
        notes.append(note)
    train_labels, val_labels = group_label_use(row)
    if paper.train_group_labels is not None and train_labels is not None and paper.train_group_labels != train_labels:
        notes.append(
            f"paper trains {'with' if paper.train_group_labels else 'without'} group labels, ours "
            f"{'with' if train_labels else 'without'}"
        )
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


def _ours(found: Stats | None) -> dict[str, float | int] | None:
    return None if found is None else found.as_dict()


def compare_with_papers(
    rows: list[Row], results: list[PaperResult], metrics: tuple[str, ...] | list[str] = (), spread: str = "se"
) -> list[dict[str, Any]]:
    """One record per (row, paper number) that match, or one per row without any: ours, the paper's, the
    difference and where the protocols differ. ``metrics`` keeps only the papers' numbers of those metrics;
    ``spread`` is the ± of the notes' numbers."""
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
            ours = row.stats(paper.metric)
            notes = [] if ours is not None else [f"the runs did not record {paper.metric}"]
            records.append(
                {
                    **base,
                    "metric": paper.metric,
                    "ours": _ours(ours),
                    "paper": {"value": paper.value, "std": paper.std},
                    "difference": None if ours is None else ours.mean - paper.value,
                    "source": paper.source,
                    "paper_selection": paper.selection,
                    "paper_note": paper.note,
                    "note": "; ".join(notes + _protocol_notes(row, paper, spread)),
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
    return {
        **base,
        "metric": shown[0] if shown else "",
        "ours": _ours(row.stats(shown[0])) if shown else None,
        "paper": None,
        "difference": None,
        "source": "",
        "paper_selection": None,
        "paper_note": "",
        "note": note,
    }


def render_comparison(records: list[dict[str, Any]], fmt: str, spread: str = "se") -> str | Any:
    """The comparison as a rich Table, Markdown, CSV or JSON (percent for people, fractions in CSV and
    JSON, which carry both the std and the s.e.; ``spread`` is the ± of ours in the table and Markdown)."""
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
                    *(ours.get("mean", ""), ours.get("std", ""), ours.get("se", "")),
                    *(paper.get("value", ""), paper.get("std") or ""),
                    *(difference, r["source"], r["note"]),
                ]
            )
        return buffer.getvalue()
    labels = rule_labels()
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
                labels.get(r["selection"], r["selection"]),
                str(r["n"]),
                r["metric"] or "-",
                percent(None if ours is None else Stats(ours["mean"], ours["std"], ours["n"]), spread),
                paper_text,
                NO_NUMBER if r["difference"] is None else f"{100 * r['difference']:+.1f}",
                r["source"] or NO_NUMBER,
                r["note"] or "",
            ]
        )
    about = f"accuracy %; ours: {spread_caption(spread)}, the paper's ± as it reports it; Δ = ours − paper, in points"
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in body]
        return "\n".join(lines) + f"\n\n{about}.\n"
    from rich.table import Table

    table = Table(title=f"robust report against the papers ({about})")
    for name in header:
        table.add_column(name, justify="right" if name in ("n", "ours", "paper", "Δ (points)") else "left")
    for cells in body:
        table.add_row(*cells)
    return table
