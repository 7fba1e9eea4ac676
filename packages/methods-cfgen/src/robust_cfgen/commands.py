"""``robust cfgen preview``: a picture of what CFGen trains on.

Added to the ``robust`` CLI by the ``register_commands`` hook; torch is imported inside the
command only (``robust --help`` imports this module).
"""

from __future__ import annotations

import click

CF_INFILLS = ("mean", "random", "shuffle", "tile")
F_INFILLS = ("random", "shuffle", "mrand", "fgsm")


@click.group()
def cfgen() -> None:
    """CFGen tools."""


@cfgen.command()
@click.option(
    "--dataset",
    "-d",
    "dataset",
    default="synthetic-waterbirds",
    show_default=True,
    help="A dataset with masks or boxes.",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Dataset option (repeatable).")
@click.option("--n", "count", type=click.IntRange(1, 64), default=6, show_default=True, help="Training images shown.")
@click.option(
    "--cf",
    "cf_infills",
    default=",".join(CF_INFILLS),
    show_default=True,
    help="Counterfactual infills (comma-separated).",
)
@click.option(
    "--f", "f_infills", default=",".join(F_INFILLS), show_default=True, help="Factual infills (comma-separated)."
)
@click.option(
    "--from",
    "run_dir",
    type=click.Path(file_okay=False, exists=True),
    help="A cfgen/erm run whose model drives fgsm (else a freshly initialised one).",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False),
    default="cfgen-preview.png",
    show_default=True,
    help="PNG file to write.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random infills.")
@click.option("--data-root", help="Data root (default $ROBUST_DATA).")
def preview(
    dataset: str,
    sets: tuple[str, ...],
    count: int,
    cf_infills: str,
    f_infills: str,
    run_dir: str | None,
    out: str,
    seed: int,
    data_root: str | None,
) -> None:
    """Write a grid: each row a training image, then its counterfactual images (the box around the
    foreground infilled) and its factual images (the background infilled), one column per infill."""
    from robust.api import parse_set
    from robust_cfgen.preview import write_preview

    options = {}
    for item in sets:
        path, value = parse_set(item)
        options[".".join(path[1:] if path[0] == "dataset" and len(path) > 1 else path)] = value
    written = write_preview(
        dataset,
        options,
        count=count,
        cf_infills=[s for s in cf_infills.split(",") if s],
        f_infills=[s for s in f_infills.split(",") if s],
        run_dir=run_dir,
        out=out,
        seed=seed,
        root=data_root,
    )
    click.echo(f"Wrote {written}")
