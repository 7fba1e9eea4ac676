"""``robust report``: finished runs aggregated over seeds. Imported by ``robust --help``, so click only at
the top: the aggregation, rich and matplotlib load when the command runs."""

from __future__ import annotations

import click

SPREAD_HELP = (
    "The ± of the table, Markdown and figure: se, the standard error of the mean over seeds (stdev/sqrt(n)); "
    "sd, the standard deviation over seeds. CSV and JSON carry both."
)
FIGURE_INSTALL = (
    "--figure draws with matplotlib, which is not installed here: `pip install 'robust-report[figure]'` "
    "(from a checkout of robust: `pip install -e 'packages/report[figure]'`), or leave --figure out."
)


def _png(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.lower().endswith(".png"):
        raise click.BadParameter(f"{value!r}: the figure is a PNG; give a path that ends in .png.")
    return value


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]), default="table", show_default=True
)
@click.option(
    "--selection",
    help="Selection rule to report (default: each run's default, best val worst-group when groups are known).",
)
@click.option("--metric", "metrics", multiple=True, help="Metric to show, e.g. test/worst_group_acc. Repeatable.")
@click.option("--spread", type=click.Choice(["se", "sd"]), default="se", show_default=True, help=SPREAD_HELP)
@click.option(
    "--figure",
    type=click.Path(dir_okay=False),
    callback=_png,
    metavar="PATH.png",
    help="Also draw the table as a figure: per-method bars with error bars, one panel per dataset, one group "
    "of bars per metric (needs matplotlib: pip install 'robust-report[figure]').",
)
@click.option(
    "--against-paper",
    is_flag=True,
    help="Set each row beside the numbers its method's paper reports (registered by the method plugins): "
    "ours, the paper's, the difference in points, and where the protocols differ (e.g. oracle test selection).",
)
def report(
    paths: tuple[str, ...],
    fmt: str,
    selection: str | None,
    metrics: tuple[str, ...],
    spread: str,
    figure: str | None,
    against_paper: bool,
) -> None:
    """Aggregate finished runs over seeds, per method, dataset and model: the mean ± standard error (or
    deviation) of each metric, the group labels the runs used and their wall time."""
    from robust.api import ConfigError, check_output, rule_labels

    if selection is not None and selection not in rule_labels():
        raise ConfigError(f"Unknown selection rule {selection!r}; expected one of {', '.join(rule_labels())}.")
    if figure is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.ClickException(FIGURE_INSTALL) from None
        check_output(figure, "robust report")
    from rich.console import Console

    from robust_report.aggregate import aggregate, find_summaries, pick_metrics

    if against_paper:
        from robust.api import get_registry
        from robust_report.comparison import compare_with_papers, paper_split_options, render_comparison

        papers = get_registry().paper_results
        rows = aggregate(find_summaries(list(paths)), selection, split_by=paper_split_options(papers))
        output = render_comparison(compare_with_papers(rows, papers, metrics, spread), fmt, spread)
    else:
        from robust_report.render import render

        rows = aggregate(find_summaries(list(paths)), selection)
        output = render(rows, pick_metrics(rows, metrics), fmt, spread)
    if isinstance(output, str):
        click.echo(output, nl=False)
    else:
        Console().print(output)
    if figure is not None:
        from robust_report.figure import draw, save

        if not rows:
            raise ConfigError(f"Nothing to draw in {figure!r}: no run recorded the selection rule {selection!r}.")
        save(draw(rows, pick_metrics(rows, metrics), spread), figure)
        click.echo(f"Figure: {figure}", err=True)
