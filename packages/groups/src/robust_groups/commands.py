"""``robust discover``: infer groups from a trained run. Torch-free at import (``robust --help`` loads it)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--from", "from_run", required=True, metavar="RUN_DIR", help="A finished run (usually ERM).")
@click.option("--dataset", "-d", help="The run's dataset (checked; default: the run's).")
@click.option("--clusters-per-class", "-k", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--splits", default="train,val", show_default=True, help="Splits to infer groups of (train first).")
@click.option("--checkpoint", default="last", show_default=True, help="last, a selection rule, or phase-NAME.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="CSV to write (default RUN_DIR/groups.csv).")
@click.option("--seed", type=int, default=1, show_default=True, help="k-means seed.")
@click.option("--restarts", type=click.IntRange(min=1), default=10, show_default=True, help="k-means restarts.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False), help="Where datasets live (default $ROBUST_DATA).")
def discover(
    from_run: str,
    dataset: str | None,
    clusters_per_class: int,
    splits: str,
    checkpoint: str,
    out: str | None,
    seed: int,
    restarts: int,
    device: str,
    data_root: str | None,
) -> None:
    """Infer groups nobody annotated: cluster a trained model's representations per class, write them
    as a CSV that any run reads with --set dataset.groups=FILE, and score them against true groups."""
    from contextlib import nullcontext

    from rich.console import Console
    from rich.table import Table

    from robust.api import RunLock, check_output, run_root
    from robust_groups.discovery import discover_from_run, discovery_outputs, write_discovery

    path = Path(out) if out else Path(from_run) / "groups.csv"
    for written in discovery_outputs(path):  # before any work: never over another command's file
        check_output(written, "robust discover")
    root = run_root(path)  # writing into a run directory: as its one writer, for the time it takes
    with RunLock(root, "robust discover") if root is not None else nullcontext():
        found = discover_from_run(
            from_run,
            dataset=dataset,
            checkpoint=checkpoint,
            num_clusters=clusters_per_class,
            splits=tuple(s.strip() for s in splits.split(",") if s.strip()),
            device=device,
            seed=seed,
            restarts=restarts,
            data_root=data_root,
        )
        write_discovery(path, found)
    table = Table(title=f"inferred groups ({clusters_per_class} per class)")
    for column in ("split", "samples", "group sizes", "ARI", "purity", "worst-group recall"):
        table.add_column(column, justify="left" if column in ("split", "group sizes") else "right")
    for name, entry in found.report()["splits"].items():
        match = entry.get("agreement_with_true_groups")
        scores = [f"{match[k]:.3f}" for k in ("ari", "purity", "worst_group_recall")] if match else ["—"] * 3
        table.add_row(name, str(entry["samples"]), " ".join(map(str, entry["group_sizes"])), *scores)
    Console().print(table)
    click.echo(f"Wrote {path} (and {path.with_suffix('.json').name}). Use it: --set dataset.groups={path}")
