"""``robust data make-cmnist`` and ``robust data make-cifar10c``: build LfF's datasets in DisEnt's layout.

Standalone click commands (the ``data`` group attaches them). Importing this module stays cheap:
the generators are imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

PCT_CHOICES = ("0.5", "1", "2", "5")
ROOT_HELP = "Data root (default: $ROBUST_DATA or ~/.local/share/robust)."


def _paths(data_root: str | None, source: str | None, default_folder: str, out: str | None) -> tuple[Path, Path]:
    from robust.api import data_root as default_root

    root = default_root(data_root)
    return (Path(source) if source else root / default_folder), (Path(out) if out else root)


def _common(fn):
    options = [
        click.option("--data-root", default=None, help=ROOT_HELP),
        click.option("--out", default=None, help="Folder to write <name>/ into (default: the data root)."),
        click.option(
            "--pct",
            "pcts",
            multiple=True,
            type=click.Choice(PCT_CHOICES),
            help="Conflict percentage to make (repeatable; default all of 0.5, 1, 2, 5).",
        ),
        click.option(
            "--valid-fraction",
            default=0.1,
            show_default=True,
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            help="Part of the training images held out as valid/ (biased like train).",
        ),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the data."),
        click.option("--overwrite", is_flag=True, help="Replace an existing output folder."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command("make-cmnist")
@click.option("--mnist", "mnist_root", default=None, help="Folder with the MNIST idx files (default: DATA_ROOT/MNIST).")
@click.option(
    "--severity",
    default=4,
    show_default=True,
    type=click.IntRange(1, 5),
    help="LfF severity: colour noise σ = 0.05, 0.02, 0.01, 0.005, 0.002 for 1..5.",
)
@_common
def make_cmnist_command(mnist_root, severity, data_root, out, pcts, valid_fraction, seed, overwrite) -> None:
    """Make Colored MNIST as LfF does, in DisEnt's PNG folders (loaded by the cmnist dataset)."""
    from robust_datasets.lff_generators import PCTS, make_cmnist

    source, target = _paths(data_root, mnist_root, "MNIST", out)
    chosen = [float(p) for p in pcts] or list(PCTS)
    path = make_cmnist(source, target, chosen, severity, valid_fraction, seed, overwrite)
    click.echo(f"Wrote {path}. Train with: robust run METHOD --dataset cmnist --data-root {target}")


@click.command("make-cifar10c")
@click.option(
    "--cifar",
    "cifar_root",
    default=None,
    help="Folder with the CIFAR-10 python batches (default: DATA_ROOT/cifar-10-batches-py).",
)
@click.option(
    "--severity",
    default=4,
    show_default=True,
    type=click.IntRange(1, 4),
    help="LfF severity 1..4, applied as Hendrycks level severity + 1.",
)
@_common
def make_cifar10c_command(cifar_root, severity, data_root, out, pcts, valid_fraction, seed, overwrite) -> None:
    """Make Corrupted CIFAR-10 as LfF does (10 corruptions without ImageMagick), in DisEnt's PNG folders."""
    from robust_datasets.lff_generators import PCTS, make_cifar10c

    source, target = _paths(data_root, cifar_root, "cifar-10-batches-py", out)
    chosen = [float(p) for p in pcts] or list(PCTS)
    path = make_cifar10c(source, target, chosen, severity, valid_fraction, seed, overwrite)
    click.echo(f"Wrote {path}. Train with: robust run METHOD --dataset cifar10c --data-root {target}")
