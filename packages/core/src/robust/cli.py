"""The ``robust`` command line.

Importing this module must stay cheap: no torch at the top level (``robust --help`` and
``robust list`` target well under 0.3 s). Commands that train import the engine lazily.
Plugins add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from robust import __version__
from robust.errors import RobustError


class RobustGroup(click.Group):
    """A click group that turns user errors into one paragraph and suggests command names."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            from robust.errors import install_hint

            if install := install_hint("command", name):
                ctx.fail(f"No such command {name!r}. {install}")
            matches = difflib.get_close_matches(name, self.list_commands(ctx), n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
            ctx.fail(f"No such command {name!r}.{hint} Run `robust --help` for the list of commands.")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RobustError as exc:
            _fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            _fail(
                "Interrupted. A run keeps its last checkpoint: continue it with `robust run METHOD --resume --out RUN_DIR`.",
                130,
            )
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # `robust list | head`: the reader left; quiet, as Python's docs advise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
        except Exception as exc:
            if os.environ.get("ROBUST_DEBUG"):
                raise
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
            _fail(
                f"Unexpected {type(exc).__name__}: {first_line}. This is a bug in robust or in a plugin, not in "
                "your input as far as robust can tell. Run again with ROBUST_DEBUG=1 for the full traceback and "
                "report it with the command you ran.",
                1,
            )


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(cls=RobustGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="robust")
def cli() -> None:
    """robust: train image classifiers that do not lean on spurious correlations.

    \b
    Quick tour:
      robust list                          methods, datasets, models, losses, transforms, plugins...
      robust info erm                      a method's options, defaults and presets
      robust info train                    the engine's options (with those plugins add)
      robust run erm --dataset synthetic-waterbirds --epochs 5
      robust report runs/                  mean ± s.e. over seeds (robust-report)
    """


KIND_NAMES = {
    "methods": "method",
    "datasets": "dataset",
    "models": "model",
    "losses": "loss",
    "infills": "infill",
    "mask-providers": "mask_provider",
    "dataset-transforms": "dataset_transform",
    "augmentations": "augmentation",
    "batch-transforms": "batch_transform",
    "options": "options",
}
# How `robust info` prefixes a kind's options in --set.
OPTION_PREFIX = {"method": "", "dataset_transform": "dataset.", "batch_transform": "train.", "options": "train."}
# Kinds registered as plain functions: their keyword arguments after these positional ones are the options.
FUNCTION_KINDS = {"infill": 3, "mask_provider": 1, "augmentation": 5}


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice([*KIND_NAMES, "plugins", "all"]), default="all")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def list_command(kind: str, pattern: str | None, as_json: bool) -> None:
    """List what the installed plugins provide (optionally filtered by a glob PATTERN)."""
    from robust.plugins import plugin_distribution, plugin_records
    from robust.registry import get_registry

    registry = get_registry()
    kinds = list(KIND_NAMES) if kind == "all" else ([kind] if kind in KIND_NAMES else [])
    result: dict[str, Any] = {}
    for plural in kinds:
        result[plural] = [
            {"name": e.name, "package": plugin_distribution(e.plugin), "plugin": e.plugin, "description": e.description}
            for e in registry.entries(KIND_NAMES[plural], pattern)
        ]
    if kind in ("plugins", "all"):
        result["plugins"] = [
            {
                "name": r.name,
                "package": r.distribution,
                "version": r.version,
                "builtin": r.builtin,
                "status": "broken" if r.error else "ok",
                "error": r.error,
                "hooks": r.hooks,
            }
            for r in plugin_records()
        ]
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for plural, items in result.items():
        if plural == "plugins":
            rows = [
                (
                    item["name"],
                    " ".join(filter(None, (item["package"], item["version"]))),
                    click.style("broken: " + item["error"], fg="red")
                    if item["error"]
                    else ", ".join(h.removeprefix("register_") for h in item["hooks"]),
                )
                for item in items
            ]
        else:
            rows = [(item["name"], item["package"] or "", item["description"]) for item in items]
        _print_rows(plural, rows)


def _print_rows(title: str, rows: list[tuple[str, str, str]]) -> None:
    """A listing as aligned plain text, the last column wrapped to the terminal: `robust list` prints a
    dozen of these, and rich's tables cost about 0.1 s there (the command's budget is 0.2 s)."""
    import shutil
    import textwrap

    click.secho(title, bold=True)
    first, second = (max((len(row[i]) for row in rows), default=0) for i in (0, 1))
    indent = 2 + first + 2 + second + 2
    width = max(40, shutil.get_terminal_size((100, 24)).columns - indent)
    for name, package, text in rows:
        lines = textwrap.wrap(text, width) or [""]
        click.echo(f"  {name:<{first}}  {package:<{second}}  {lines[0]}")
        for line in lines[1:]:
            click.echo(" " * indent + line)
    click.echo()


@cli.command()
@click.argument("name")
@click.option(
    "--kind", type=click.Choice(list(KIND_NAMES.values())), help="Which kind, when a name is registered as several."
)
def info(name: str, kind: str | None) -> None:
    """Show anything registered (a method, dataset, model, loss, transform...): its package, options, presets.
    `robust info train` shows the engine's options."""
    from rich.console import Console
    from rich.table import Table

    from robust.config import schema_rows
    from robust.errors import UnknownNameError
    from robust.plugins import plugin_distribution
    from robust.registry import get_registry

    if name == "train" and kind is None:
        from robust.plugin_options import train_config_model

        table = Table(title="engine options (--set train.KEY=VALUE, or KEY=VALUE when no method option has the name)")
        for col in ("option", "type", "default", "description"):
            table.add_column(col)
        for row in schema_rows(train_config_model()):
            table.add_row(*row)
        Console().print(table)
        return
    registry = get_registry()
    kinds = [kind] if kind else list(KIND_NAMES.values())
    entries = [e for k in kinds if (e := registry.find(k, name)) is not None]
    if not entries:
        from robust.plugins import unloaded_plugins
        from robust.registry import UnknownFromBrokenPlugin

        everything = [n for k in kinds for n in registry.names(k)]
        hints = difflib.get_close_matches(name, everything, n=3, cutoff=0.5)
        if broken := unloaded_plugins():  # it may be theirs: say so, not "pip install it"
            raise UnknownFromBrokenPlugin(kind or "name", name, hints, everything, broken)
        raise UnknownNameError(kind or "name", name, hints, everything)
    console = Console()
    for entry in entries:
        console.print(
            f"[bold]{entry.name}[/bold] ({entry.kind}, package {plugin_distribution(entry.plugin)}, {entry.target_name})"
        )
        if entry.description:
            console.print(entry.description)
        for key, value in entry.metadata.items():
            console.print(f"{key}: {value}")
        if entry.kind in FUNCTION_KINDS:  # a function: its keyword arguments are the options
            import inspect

            params = list(inspect.signature(entry.load()).parameters.values())[FUNCTION_KINDS[entry.kind] :]
            shown = ", ".join(f"{p.name}={p.default!r}" for p in params) or "none"
            what = entry.kind.replace("_", " ")
            console.print(f"options (set through the method that uses this {what}): {shown}")
            continue
        table = Table(
            title=f"options of {entry.kind} {entry.name!r}  (--set {OPTION_PREFIX.get(entry.kind, entry.kind + '.')}KEY=VALUE)"
        )
        for col in ("option", "type", "default", "description"):
            table.add_column(col)
        for row in schema_rows(entry.load() if entry.kind == "options" else entry.load_config()):
            table.add_row(*row)
        console.print(table)
        if entry.kind == "dataset":
            transforms = [
                f"{t.name}: {', '.join(t.load_config().model_fields)}"
                for t in registry.entries("dataset_transform")
                if t.load_config() is not None
            ]
            console.print(
                "every dataset also takes the options of the installed dataset transforms (--set dataset.KEY=VALUE): "
                + "; ".join(transforms)
            )
        if entry.kind == "method":
            target = entry.load()
            presets = getattr(target, "presets", {})
            if presets:
                auto = getattr(target, "dataset_presets", {})
                console.print(preset_table(presets))
                if auto:
                    console.print("picked automatically: " + ", ".join(f"{d} -> {p}" for d, p in sorted(auto.items())))
            train_groups, val_groups = (getattr(target, f"uses{k}_group_labels", False) for k in ("", "_val"))
            console.print(
                f"uses group labels in training: {'yes' if train_groups else 'no'}"
                + (" (reads the validation split's, with --val-attr yes)" if val_groups and not train_groups else "")
            )


def preset_table(presets: dict[str, dict[str, Any]]) -> Any:
    """A method's presets, one row each: the options it sets as ``--set`` spells them (the method's own
    unprefixed); those every preset sets are listed once, in the caption."""
    from rich.table import Table

    items = {name: preset_items(presets[name]) for name in sorted(presets)}
    common = [i for i in next(iter(items.values())) if all(i in other for other in items.values())]
    common = common if len(items) > 1 else []
    table = Table("preset", "sets", title="presets (--set preset=NAME)")
    table.caption = f"every preset also sets: {', '.join(common)}" if common else None
    for name, sets in items.items():
        table.add_row(name, ", ".join(i for i in sets if i not in common) or "(nothing else)")
    return table


def preset_items(preset: dict[str, Any]) -> list[str]:
    """``["lr=0.001", "train.steps=3000", 'model.name="resnet18"']``: a preset's options as ``--set`` spells them."""
    from robust.config import shown_value

    parts = []
    for section, options in preset.items():
        prefix = "" if section == "method" else f"{section}."
        if isinstance(options, dict):
            parts += [f"{prefix}{key}={shown_value(value)}" for key, value in options.items()]
        else:
            parts.append(f"{section}={shown_value(options)}")
    return parts


@cli.command()
@click.argument("method")
@click.option("--dataset", "-d", help="Dataset name (see `robust list datasets`).")
@click.option("--model", "-m", help="Model name (default: the preset's or the dataset's).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="TOML file with [method], [dataset], [model], [train] sections.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override an option, e.g. --set lr=0.01 or --set dataset.conflict_pct=2. Repeatable.",
)
@click.option(
    "--out", "-o", type=click.Path(file_okay=False), help="Run directory (default runs/METHOD-DATASET-SEED-TIME)."
)
@click.option("--seed", type=int, help="Random seed.")
@click.option("--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--epochs", type=int, help="Training epochs.")
@click.option("--steps", type=int, help="Training steps (overrides epochs).")
@click.option("--data-root", type=click.Path(file_okay=False), help="Where datasets live (default $ROBUST_DATA).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its last checkpoint.")
@click.option(
    "--rerun",
    metavar="PHASE",
    help="Rerun PHASE and the phases after it in the run directory --out (finished or not), from the state saved "
    "when the phase before it ended; --set may change the method's options.",
)
@click.option(
    "--from",
    "from_run",
    metavar="RUN_DIR",
    help="Start from the model another run trained (methods with a from_run option, e.g. prusc, irm-afe).",
)
@click.option(
    "--train-attr",
    type=click.Choice(["auto", "yes", "no"]),
    help="Group labels of the training data: yes, no (withheld; a method that needs them is refused), auto "
    "(default: yes when the method uses them).",
)
@click.option(
    "--val-attr",
    type=click.Choice(["yes", "no"]),
    help="Group labels of the validation split: yes (default; selection by val worst-group accuracy) or no "
    "(withheld; selection by val worst-class accuracy).",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Train data-parallel over N processes on this machine (one per GPU; gloo on the CPU): the same as "
    "`torchrun --standalone --nproc-per-node N -m robust run ...`. train.batch_size stays the global batch.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the resolved configuration (defaults, preset, --config, --set and flags merged) as TOML, which "
    "--config reads back, and exit without loading data or training.",
)
def run(
    method: str,
    dataset: str | None,
    model: str | None,
    config_file: str | None,
    sets: tuple[str, ...],
    out: str | None,
    seed: int | None,
    device: str | None,
    epochs: int | None,
    steps: int | None,
    data_root: str | None,
    resume: bool,
    rerun: str | None,
    from_run: str | None,
    train_attr: str | None,
    val_attr: str | None,
    nproc: int | None,
    quiet: bool,
    print_config: bool,
) -> None:
    """Train METHOD on a dataset and write a run directory (config, history, summary, checkpoints)."""
    from robust.errors import ConfigError
    from robust.results import RunDir

    base = None
    if resume and rerun:
        raise ConfigError(
            "Pass --resume or --rerun PHASE, not both: a rerun that was interrupted is resumed with --resume."
        )
    if resume or rerun:
        if not out:
            raise ConfigError(f"--{'resume' if resume else 'rerun'} needs --out RUN_DIR: the directory of the run.")
        run_dir = RunDir(out)
        run_dir.check(resume=resume, rerun=rerun)
        base = run_dir.read_config()
    if from_run is not None:
        sets = (f"from_run={from_run}", *sets)
    flags = {"seed": seed, "device": device, "epochs": epochs, "steps": steps, "data_root": data_root}
    flags |= {"train_attr": train_attr, "val_attr": val_attr}
    if not print_config:  # before torch: a dataset that is not here is reported in a fraction of a second
        _check_dataset_files(dataset, config_file, sets, data_root, base)
    from robust.resolve import resolve_run_config  # imports torch (the method's module)

    resolved = resolve_run_config(
        method, dataset=dataset, model=model, config_file=config_file, sets=sets, flags=flags, base=base
    )
    config = resolved.config
    for note in resolved.notes:
        click.echo(f"Note: {note}", err=True)
    if print_config:
        from robust.toml_values import to_toml

        click.echo(to_toml(config.model_dump(mode="json")), nl=False)
        return
    if resume:  # before the data is loaded: a changed option is refused now, naming what changed
        RunDir(out).check_same_run(config.model_dump(mode="json"), resume=True)
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        _launch_processes(nproc)  # the options are valid: the processes start
        return

    from rich.console import Console

    from robust import distributed
    from robust.engine import Run
    from robust.summary_tables import summary_table

    distributed.setup(config.device)  # under torchrun: join the other processes (a no-op otherwise)
    try:
        if out is None:  # rank 0's clock names the run for every process
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            default = str(Path("runs") / f"{config.method_name}-{config.dataset_name}-{config.seed}-{stamp}")
            out = distributed.broadcast_object(default)
        console = Console(stderr=True, quiet=quiet)
        runner = Run(resolved, out, resume=resume, quiet=quiet, console=console, rerun=rerun)
        summary = runner.fit()
    finally:
        distributed.teardown()
    if not runner.is_main:
        return
    if not quiet:
        Console().print(summary_table(summary))
    click.echo(f"Run directory: {out}", err=quiet)


def _check_dataset_files(
    dataset: str | None,
    config_file: str | None,
    sets: tuple[str, ...],
    data_root: str | None,
    base: dict[str, Any] | None,
) -> None:
    """Raise the dataset's DataError now, before torch is imported, when its registration names files
    that are not under the data root (:mod:`robust.ondisk`). Only the dataset's options matter here:
    anything unclear (a malformed option, an unknown name) is left to the full resolution to report."""
    from robust.config import deep_merge, load_toml, nest, parse_set
    from robust.ondisk import check_dataset_files
    from robust.paths import data_root as find_data_root
    from robust.plugins import pm
    from robust.registry import get_registry

    try:
        stored = {k: v for k, v in (base or {}).items() if k in ("dataset", "data_root")}
        tree = deep_merge(stored, load_toml(config_file) if config_file else {})
        for item in sets:
            path, value = parse_set(item)
            if path[0] in ("dataset", "data_root"):
                tree = deep_merge(tree, nest(path, value))
        options = tree.get("dataset", {})
        name = dataset or (options.get("name") if isinstance(options, dict) else None)
        if not isinstance(options, dict) or not isinstance(name, str):
            return
        registry = get_registry()
        entry = registry.find("dataset", name)
        if entry is None and (answer := pm.hook.resolve_dataset(name=name)) is not None:
            entry = registry.find("dataset", answer[0])
            options = {**answer[1], **options}
        root = data_root or tree.get("data_root")
        if entry is None or (root is not None and not isinstance(root, str)):
            return
        root_path = find_data_root(root)
    except Exception:  # whatever it is, the full resolution reports it
        return
    check_dataset_files(entry, {k: v for k, v in options.items() if k != "name"}, root_path)


def _launch_processes(nproc: int) -> None:
    """``robust run --nproc N ...``: torchrun's launcher starts N copies of this command without --nproc."""
    from robust.errors import ConfigError

    argv = sys.argv[1:]
    if "run" not in argv:
        raise ConfigError(
            "--nproc needs the command line `robust run ... --nproc N`; otherwise call torchrun directly."
        )
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "robust", *rest])
    try:
        torchrun(args)
    except ChildFailedError as exc:
        codes = sorted({failure.exitcode for failure in exc.failures.values()})
        raise SystemExit(codes[0] if len(codes) == 1 and codes[0] > 0 else 1) from None


def _register_plugin_commands() -> None:
    from robust.plugins import call_each, load_plugins

    load_plugins()
    core_commands = CORE_COMMANDS
    previous: list[str] = []

    def kwargs_for(plugin: str) -> dict[str, Any]:
        if previous:
            _restore_core_commands(core_commands, previous[-1])
        previous.append(plugin)
        return {"cli": cli}

    call_each("register_commands", kwargs_for)
    if previous:
        _restore_core_commands(core_commands, previous[-1])


def _restore_core_commands(core_commands: dict[str, click.Command], plugin: str) -> None:
    """A plugin may add commands, never replace the core's."""
    from robust.plugins import note_error

    for name, command in core_commands.items():
        if cli.commands.get(name) is not command:
            cli.commands[name] = command
            note_error(plugin, f"tried to replace the core command {name!r}; ignored")


CORE_COMMANDS: dict[str, click.Command] = dict(cli.commands)
_register_plugin_commands()


def main() -> None:
    cli(prog_name="robust")
