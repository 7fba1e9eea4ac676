"""``robust mixup-lambda``: what mixing weights a given alpha produces.

Added to the ``robust`` CLI by the ``register_commands`` hook. Every ``robust`` invocation
(``robust --help`` included) imports this module, so torch is imported inside the command only.
"""

from __future__ import annotations

import json

import click

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@click.command("mixup-lambda")
@click.option(
    "--alpha",
    type=click.FloatRange(min=0),
    default=0.2,
    show_default=True,
    help="mixup's alpha: lambda ~ Beta(alpha, alpha); 0 gives lambda = 1.",
)
@click.option("--n", "n", type=click.IntRange(min=1), default=10000, show_default=True, help="Number of samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def mixup_lambda(alpha: float, n: int, seed: int, as_json: bool) -> None:
    """Sample mixup's mixing weight lambda ~ Beta(ALPHA, ALPHA) and print its mean and quantiles.

    Small alpha puts lambda near 0 or 1 (mild mixing); alpha = 1 is uniform.
    """
    import torch

    from robust_example_method.method import sample_lambda  # the sampler the method uses

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = sample_lambda(alpha, (n,)).double()
    probs = torch.tensor(QUANTILES, dtype=torch.float64)
    quantiles = {f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, torch.quantile(lam, probs), strict=True)}
    stats = {
        "alpha": alpha,
        "n": n,
        "seed": seed,
        "mean": float(lam.mean()),
        "std": float(lam.std()) if n > 1 else 0.0,
        **quantiles,
    }
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(f"lambda ~ Beta({alpha:g}, {alpha:g}), {n} samples, seed {seed}")
    for key in ("mean", "std", *quantiles):
        click.echo(f"{key:>5}  {stats[key]:.4f}")
