"""``robust rare ...``: the study's analyses on any run directory.

Added to the ``robust`` CLI by the ``register_commands`` hook; torch is imported inside the
commands only (``robust --help`` imports this module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from robust_sweep.sweep import SlurmOptions, executor_options


@click.group()
def rare() -> None:
    """Rare spurious correlations: the spurious score of trained runs."""


@rare.command("spurious-score")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--pattern", help="Pattern: v1/v3/v8, v18/v19/v20, v30 (or s1-s3, r1-r3, core). Default: the planted one."
)
@click.option("--target", type=int, help="Target class. Default: the planted one.")
@click.option("--pattern-seed", type=int, help="Seed of a random pattern. Default: the planted one, else 0.")
@click.option("--checkpoint", default="last", show_default=True, help="last, a selection rule, or phase-NAME.")
@click.option("--split", default="test", show_default=True, help="The split whose images get the pattern.")
@click.option("--threshold", type=float, default=0.1, show_default=True, help="τ: a rise of p_target above it counts.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False), help="Where datasets live (default: the run's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def spurious_score_command(
    run_dirs: tuple[str, ...],
    pattern: str | None,
    target: int | None,
    pattern_seed: int | None,
    checkpoint: str,
    split: str,
    threshold: float,
    device: str,
    data_root: str | None,
    as_json: bool,
) -> None:
    """The spurious score of each RUN_DIR: the fraction of test images whose target-class probability
    rises by more than τ when the pattern is added. The first run names the pattern and the target
    (its planted ones unless given); list a run trained without the pattern after it to compare.
    Each result is also written to RUN_DIR/spurious_score-PATTERN-TARGET-SEED.json."""
    from robust.api import ConfigError, RunLock, atomic_write_json, check_output, load_trained_run
    from robust_rare.score import spurious_score

    rows: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        trained = load_trained_run(run_dir, checkpoint, device, data_root)
        planted = trained.data.info.extra.get("planted", {})
        pattern = pattern or planted.get("pattern")
        target = planted.get("target") if target is None else target
        pattern_seed = planted.get("seed", 0) if pattern_seed is None else pattern_seed
        if pattern is None or target is None:
            raise ConfigError(
                f"Run {run_dir!r} was trained without a planted pattern, so there is none to test by default: pass "
                "--pattern (v1, v3, v8, v18, v19, v20, v30) and --target CLASS."
            )
        if split not in trained.data.splits:
            raise ConfigError(
                f"Run {run_dir!r}'s dataset has no split {split!r}; it has {', '.join(trained.data.splits)}."
            )
        result = spurious_score(
            trained.model,
            trained.data.splits[split],
            trained.data.info,
            pattern,
            target,
            pattern_seed,
            threshold=threshold,
            device=trained.device,
        )
        result.update(run=str(run_dir), checkpoint=checkpoint, split=split, planted_n=planted.get("n", 0))
        name = f"spurious_score-{result['pattern']}-{target}-{pattern_seed}.json"
        check_output(Path(run_dir) / name, "robust rare spurious-score")
        with RunLock(run_dir, "robust rare spurious-score"):  # not while a run writes there
            atomic_write_json(Path(run_dir) / name, result)
        rows.append(result)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table(rows)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    table = Table(
        title=f"spurious score: pattern {first['pattern']}, target class {first['target']}, seed {first['seed']}, "
        f"τ = {first['threshold']:g}"
    )
    for col in (
        "run",
        "planted",
        "spurious score",
        "mean rise of p_target",
        "clean acc",
        "patterned acc (other classes)",
    ):
        table.add_column(col, justify="left" if col == "run" else "right")
    for row in rows:
        other = row["patterned_other_acc"]
        table.add_row(
            row["run"],
            str(row["planted_n"]),
            f"{row['spurious_score']:.3f}",
            f"{row['mean_rise']:+.3f}",
            f"{100 * row['clean_acc']:.1f} %",
            "-" if other is None else f"{100 * other:.1f} %",
        )
    Console().print(table)


def _csv(kind: type, text: str, what: str) -> list[Any]:
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated {what}") from None


@rare.command("sweep")
@click.option("--dataset", "-d", default="synthetic-cmnist", show_default=True, help="Any registered image dataset.")
@click.option("--patterns", default="v8,v20", show_default=True, help="Patterns (comma-separated).")
@click.option(
    "--counts",
    help="Planted examples (comma-separated). Default: the study's on mnist/fashion-mnist (0,3,5,10,20,100,2000,"
    "5000) and cifar10 (0,3,5,10,20,100,500), else 0,1,3,10,100.",
)
@click.option(
    "--seeds",
    default="0,1,2,3,4",
    show_default=True,
    help="Dataset seeds: which images, which random pattern (the study's 5: params.py, the notebooks' range(5)).",
)
@click.option("--target", type=int, default=0, show_default=True, help="The class whose images get the pattern.")
@click.option(
    "--mitigations",
    default="none",
    show_default=True,
    help="Comma-separated: none, l2=WEIGHT_DECAY, noise=STD (Gaussian input noise, [0, 1] pixel units), or the "
    "study's grids l2-grid, noise-grid (MNIST/Fashion), l2-grid-cifar, noise-grid-cifar.",
)
@click.option(
    "--model",
    "-m",
    help="Model. Default: the study's on its datasets (LargeMLP on mnist/fashion-mnist, altResNet20Norm02 with "
    "weight decay 1e-4 on cifar10), else the dataset's.",
)
@click.option("--epochs", type=int, default=70, show_default=True, help="Epochs of every run (the study: 70).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Extra option for every run (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep directory (re-launch to resume).")
@click.option(
    "--executor",
    type=click.Choice(["inline", "local", "slurm"]),
    default="inline",
    show_default=True,
    help="inline: one run after another in this process; local: --parallel processes; slurm: an array job "
    "(robust sweep's executors, submitit).",
)
@executor_options
def sweep_command(
    dataset: str,
    patterns: str,
    counts: str | None,
    seeds: str,
    target: int,
    mitigations: str,
    model: str | None,
    epochs: int,
    sets: tuple[str, ...],
    out: str,
    executor: str,
    parallel: int,
    slurm: SlurmOptions,
) -> None:
    """The study's grid as ordinary runs under OUT, then the spurious score of each: results.csv, a table
    (mean ± standard error over seeds) and spurious_score.png (score against planted examples)."""
    from rich.console import Console
    from rich.table import Table

    from robust_rare.names import dataset_name
    from robust_rare.patterns import canonical
    from robust_rare.sweep import (
        DEFAULT_COUNTS,
        SweepSpec,
        expand_mitigations,
        parse_mitigation,
        plot,
        recipe,
        run_sweep,
        summarise,
    )

    dataset = dataset_name(dataset)
    study = recipe(dataset)
    spec = SweepSpec(
        dataset=dataset,
        patterns=[canonical(p) for p in _csv(str, patterns, "pattern names")],
        counts=sorted(set(_csv(int, counts, "integers"))) if counts else (study.counts if study else DEFAULT_COUNTS),
        seeds=_csv(int, seeds, "integers"),
        target=target,
        mitigations=[parse_mitigation(m)[0] for m in expand_mitigations(_csv(str, mitigations, "mitigations"))],
        model=model,
        epochs=epochs,
        sets=list(sets),
    )
    root = Path(out)
    console = Console(stderr=True)
    rows = run_sweep(
        spec, root, progress=lambda line: console.print(line), executor=executor, parallel=parallel, slurm=slurm
    )
    summary = summarise(rows)
    table = Table(title=f"spurious score on {dataset} (target class {target}), mean ± s.e. over seeds")
    for col in ("pattern", "mitigation", "planted", "runs", "spurious score", "clean acc"):
        table.add_column(col, justify="left" if col in ("pattern", "mitigation") else "right")
    for row in summary:
        table.add_row(
            row["pattern"],
            row["mitigation"],
            str(row["n"]),
            str(row["runs"]),
            f"{row['score']:.3f} ± {row['se']:.3f}",
            f"{100 * row['clean_acc']:.1f} %",
        )
    Console().print(table)
    plot(summary, root / "spurious_score.png", f"{dataset}, target class {target}")
    click.echo(f"results: {root / 'results.csv'}, plot: {root / 'spurious_score.png'}")


@rare.command("remove")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--how", type=click.Choice(["influence", "retrain"]), required=True, help="Group influence or retraining."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory of the edited model.")
@click.option(
    "--depth",
    type=int,
    help="LiSSA steps (the reference's: 1000 on CIFAR-10, else 2000 below 100 spurious examples and 1000 from 100).",
)
@click.option("--repeats", type=int, default=10, show_default=True, help="LiSSA estimates averaged.")
@click.option("--scale", type=float, help="LiSSA scale (the reference's: 100 on Fashion-MNIST and CIFAR-10, else 25).")
@click.option("--damp", type=float, default=0.01, show_default=True, help="LiSSA damping.")
@click.option(
    "--literal-scale", is_flag=True, help="Leave out LiSSA's final division by the scale, as the reference code."
)
@click.option(
    "--literal-hvp",
    is_flag=True,
    help="Differentiate LiSSA's Hessian-vector products through the removed point's gradient too, as the reference "
    "code (an extra Hessian-of-the-removed-point term).",
)
@click.option(
    "--epochs", type=int, help="retrain: epochs to continue (default: the run's plus one, as the reference's 70 → 140)."
)
@click.option("--device", default="cpu", show_default=True)
def remove_command(
    run_dir: str,
    how: str,
    out: str,
    depth: int | None,
    repeats: int,
    scale: float | None,
    damp: float,
    literal_scale: bool,
    literal_hvp: bool,
    epochs: int | None,
    device: str,
) -> None:
    """Remove the planted examples of RUN_DIR from its model, as the study tries: a group-influence
    edit of the weights, or training continued without them from the model and its optimizer state
    (the learning rate its schedule decayed to) at a constant learning rate. OUT is a run directory
    (`robust rare spurious-score RUN_DIR OUT` compares them)."""
    from robust.api import ConfigError, load_trained_run

    trained = load_trained_run(run_dir, "last", device)
    planted = trained.data.info.extra.get("planted", {})
    if not planted.get("index"):
        raise ConfigError(
            f"Run {run_dir!r} was trained without planted examples (no dataset.pattern and n_spurious > 0): there "
            "is nothing to remove."
        )
    if how == "influence":
        _influence(trained, run_dir, out, depth, repeats, scale, damp, (literal_scale, literal_hvp))
    else:
        from robust_rare.retraining import retraining_run

        retraining_run(run_dir, out, epochs=epochs, device=device).fit()
    click.echo(f"Edited model: {out} (compare: robust rare spurious-score {run_dir} {out})")


def _influence(trained: Any, run_dir: str, out: str, depth, repeats, scale, damp, literal: tuple[bool, bool]) -> None:
    import torch

    from robust.api import BatchLoader, RunDir, atomic_write_json, save_checkpoint
    from robust_rare.removal import group_influence_edit, lissa_defaults

    train = trained.data.splits["train"]
    loader = BatchLoader(train, trained.data.info, trained.device, batch_size=1024, data_on_device="no", num_workers=0)
    images = torch.cat([batch.x for batch in loader.batches(loader.sequential())])
    spurious = torch.tensor(trained.data.info.extra["planted"]["index"])
    default_scale, default_depth = lissa_defaults(trained.config["dataset"]["name"], len(spurious))
    edited = group_influence_edit(
        trained.model,
        images,
        train.labels.to(trained.device),
        spurious,
        depth=depth or default_depth,
        repeats=repeats,
        damp=damp,
        scale=scale or default_scale,
        literal_scale=literal[0],
        literal_hvp=literal[1],
    )
    target = RunDir(out)
    target.check(resume=False)
    how = {"from": str(run_dir), "how": "group influence", "literal_scale": literal[0], "literal_hvp": literal[1]}
    config = {**trained.config, "edited": how}
    target.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target.config_path, config)
    modules = {f"model.{k}": v.cpu() for k, v in edited.items()}
    save_checkpoint(target.checkpoint_path, {"engine": {}, "method": {"modules": modules}})


@rare.command("membership")
@click.argument("target_run", type=click.Path(file_okay=False))
@click.argument("shadow_run", type=click.Path(file_okay=False))
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def membership_command(target_run: str, shadow_run: str, device: str, as_json: bool) -> None:
    """Membership inference on TARGET_RUN's planted examples with an attack learnt on SHADOW_RUN.

    Train both on the two halves of one dataset: TARGET_RUN with --set dataset.membership_half=target
    (and the pattern), SHADOW_RUN with --set dataset.membership_half=shadow (no pattern), same recipe."""
    from robust.api import ConfigError, RunLock, atomic_write_json, check_output, load_trained_run
    from robust_rare.membership import attack_features, evaluate_attack, fit_attack
    from robust_rare.score import logits

    check_output(Path(target_run) / "membership.json", "robust rare membership")
    runs = {
        name: load_trained_run(path, "last", device) for name, path in (("target", target_run), ("shadow", shadow_run))
    }
    for name, trained in runs.items():
        half = trained.config["dataset"].get("membership_half")
        if half != name:
            raise ConfigError(
                f"The {name} run {(target_run if name == 'target' else shadow_run)!r} was trained on "
                f"{'the whole data' if half is None else 'the ' + half + ' half'}; train it with --set "
                f"dataset.membership_half={name} (the same membership_seed for both)."
            )
    features = {}
    for name, trained in runs.items():
        for split in ("train", "test"):
            data = trained.data.splits[split]
            out = logits(trained.model, data, trained.data.info, trained.device)
            features[name, split] = attack_features(out, data.labels.to(out.device))
    attack = fit_attack(features["shadow", "train"], features["shadow", "test"])
    index = runs["target"].data.info.extra.get("planted", {}).get("index", [])
    spurious = features["target", "train"][index] if index else features["target", "train"][:0]
    result = evaluate_attack(attack, features["target", "train"], features["target", "test"], spurious)
    result.update(target=str(target_run), shadow=str(shadow_run), planted=len(index))
    with RunLock(target_run, "robust rare membership"):
        atomic_write_json(Path(target_run) / "membership.json", result)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="membership inference (attack learnt on the shadow model)")
    columns = ("target run", "planted", "attack acc", "members flagged", "planted flagged", "P(member): members")
    for col in (*columns, "planted", "non-members"):
        table.add_column(col, justify="left" if col == "target run" else "right")
    flagged = result.get("spurious_member_recall")
    score = result.get("spurious_member_score")
    table.add_row(
        str(target_run),
        str(len(index)),
        f"{100 * result['attack_acc']:.1f} %",
        f"{100 * result['member_recall']:.1f} %",
        "-" if flagged is None else f"{100 * flagged:.1f} %",
        f"{result['member_score']:.3f}",
        "-" if score is None else f"{score:.3f}",
        f"{result['non_member_score']:.3f}",
    )
    Console().print(table)
