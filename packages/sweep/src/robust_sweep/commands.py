"""``robust sweep``: a grid of runs from a TOML spec. Torch-free at import (``robust --help`` loads it)."""

from __future__ import annotations

from pathlib import Path

import click

from robust_sweep.sweep import SlurmOptions, executor_options


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Sweep directory (launch again to resume)."
)
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@executor_options
def sweep(spec: str, out: str, executor: str, parallel: int, slurm: SlurmOptions) -> None:
    """Run the grid of SPEC (TOML: methods, datasets, seeds, [set], [grid]) as ordinary runs under OUT with
    submitit: local processes or Slurm array jobs (requeued on preemption, resuming from checkpoints). Runs
    that finished are skipped, interrupted ones resume: launch the same command again after a failure."""
    from robust_sweep.sweep import SweepSpec, launch

    outcomes = launch(
        SweepSpec.from_toml(spec), Path(out), executor=executor, parallel=parallel, slurm=slurm, progress=click.echo
    )
    click.echo(f"{len(outcomes)} runs this time; sweep directory: {out}")
