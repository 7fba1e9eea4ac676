"""Sweeps: a grid of ordinary runs (methods × datasets × seeds × hyperparameters) from a TOML spec,
run by submitit (local processes, or Slurm), with stable run names so that a sweep launched again
runs only what is missing.

A spec::

    methods = ["erm", "clp"]
    datasets = ["synthetic-waterbirds"]
    seeds = [0, 1, 2]
    epochs = 8                       # optional: --epochs of every run
    nproc = 1                        # optional: processes per run (data-parallel, one per GPU)
    [set]                            # options of every run (--set KEY=VALUE)
    "dataset.image_size" = 32
    [grid]                           # every combination of these lists
    lr = [1e-3, 1e-4]
    [methods_grid.clp]               # a grid for one method only (added to [grid])
    lambda_ = [0.5, 1.0]

Each run lives in ``SWEEP_DIR/METHOD/DATASET/HP/seedS`` where ``HP`` names the grid values
(``lr=0.001,lambda_=0.5``; ``default`` without a grid). A run with a ``summary.json`` is done and
skipped; one with a ``config.json`` but no summary was interrupted and resumes from its
checkpoint; the others start. With ``nproc`` > 1 each run is one job of that many tasks
(submitit's ``tasks_per_node``, local processes or Slurm tasks) that join one process group: the
run is data-parallel exactly as under torchrun (:mod:`robust.distributed`).
"""

from __future__ import annotations

import itertools
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robust.errors import ConfigError

KEYS = {"methods", "datasets", "seeds", "epochs", "steps", "set", "grid", "methods_grid", "name", "nproc"}


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: what to train and where."""

    method: str
    dataset: str
    seed: int
    hyper: tuple[tuple[str, Any], ...]
    sets: tuple[str, ...]
    flags: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        hp = ",".join(f"{k}={_value(v)}" for k, v in self.hyper) or "default"
        return f"{self.method}/{self.dataset}/{_safe(hp)}/seed{self.seed}"

    def all_sets(self) -> list[str]:
        return [*self.sets, *(f"{k}={_value(v)}" for k, v in self.hyper)]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v) if not isinstance(v, float) else f"{v:g}"


def _safe(text: str) -> str:
    """A directory name: the grid values, with characters a file system dislikes replaced."""
    return re.sub(r"[^A-Za-z0-9_.,=+\-\[\]]", "_", text.replace('"', ""))


@dataclass
class SweepSpec:
    methods: list[str]
    datasets: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    sets: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    methods_grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    #: Processes per run (data-parallel, one per GPU): submitit starts them as the job's tasks.
    nproc: int = 1

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        path = Path(path)
        expected = (
            "a TOML file with methods = [...], datasets = [...], and optionally seeds = [...], epochs, steps, "
            "[set] (options of every run), [grid] (lists to combine) and [methods_grid.METHOD]"
        )
        if not path.is_file():
            raise ConfigError(f"No sweep spec at {str(path)!r}: expected {expected}.")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Sweep spec {str(path)!r} is not valid TOML ({exc}); expected {expected}.") from None
        unknown = set(data) - KEYS
        if unknown:
            raise ConfigError(f"Sweep spec {str(path)!r} has unknown keys {sorted(unknown)}; expected {expected}.")
        for key in ("methods", "datasets"):
            if not isinstance(data.get(key), list) or not data[key]:
                raise ConfigError(f"Sweep spec {str(path)!r} needs a non-empty list `{key}`; expected {expected}.")
        grids = [data.get("grid", {}), *data.get("methods_grid", {}).values()]
        for grid in grids:
            for key, values in grid.items():
                if not isinstance(values, list) or not values:
                    raise ConfigError(
                        f"Sweep spec {str(path)!r}: grid entry {key!r} must be a non-empty list of values "
                        f"(e.g. {key} = [0.1, 0.01])."
                    )
        flags = {k: data[k] for k in ("epochs", "steps") if k in data}
        nproc = data.get("nproc", 1)
        if not isinstance(nproc, int) or nproc < 1:
            raise ConfigError(f"Sweep spec {str(path)!r}: nproc must be a positive integer (processes per run).")
        return cls(
            methods=list(data["methods"]),
            datasets=list(data["datasets"]),
            seeds=[int(s) for s in data.get("seeds", [0])],
            sets=dict(data.get("set", {})),
            grid=dict(data.get("grid", {})),
            methods_grid={m: dict(g) for m, g in data.get("methods_grid", {}).items()},
            flags=flags,
            nproc=nproc,
        )

    def runs(self) -> list[SweepRun]:
        """Every run, in a stable order (method, dataset, grid values, seed)."""
        fixed = tuple(f"{k}={_value(v)}" for k, v in sorted(self.sets.items()))
        out = []
        for method in self.methods:
            grid = {**self.grid, **self.methods_grid.get(method, {})}
            keys = sorted(grid)
            for dataset in self.datasets:
                for values in itertools.product(*(grid[k] for k in keys)):
                    hyper = tuple(zip(keys, values, strict=True))
                    for seed in self.seeds:
                        out.append(SweepRun(method, dataset, seed, hyper, fixed, tuple(sorted(self.flags.items()))))
        return out


def run_one(run: SweepRun, out: str) -> str:
    """Train one run of a sweep (in the worker process): start it, or resume it if it was interrupted.
    A job with several tasks (``nproc``) is one data-parallel run: its tasks join one process group."""
    from robust import distributed
    from robust.engine import Run
    from robust.resolve import resolve_run_config
    from robust.results import RunDir

    def resolve(base):
        return resolve_run_config(
            run.method,
            dataset=run.dataset,
            sets=run.all_sets(),
            flags={**dict(run.flags), "seed": run.seed},
            base=base,
        )

    run_dir = RunDir(out)
    tasks = _job_tasks()
    if tasks > 1:  # torchrun's variables from submitit's job environment, then the process group
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        distributed.setup(resolve(None).config.device)
    try:
        # Rank 0 decides for every task (another task could see the config.json rank 0 just wrote).
        state = distributed.broadcast_object(
            "finished" if run_dir.is_finished() else "resume" if run_dir.config_path.is_file() else "new"
        )
        if state == "finished":
            return "skipped"
        resume = state == "resume"
        Run(resolve(run_dir.read_config() if resume else None), out, resume=resume, quiet=True).fit()
    finally:
        distributed.teardown()
    return "resumed" if resume else "trained"


def _job_tasks() -> int:
    """Tasks of the submitit job this process belongs to (1 outside one)."""
    try:
        import submitit

        return submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not in a submitit job
        return 1


class ResumableRun:
    """What submitit runs: a callable that, when Slurm preempts it, requeues itself; the requeued job
    resumes from the run's checkpoint (``run_one`` sees its config.json)."""

    def __init__(self, run: SweepRun, out: str) -> None:
        self.run, self.out = run, out

    def __call__(self) -> str:
        return run_one(self.run, self.out)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(ResumableRun(self.run, self.out))


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus: int = 0
    timeout_min: int = 60
    cpus: int = 4
    array_parallelism: int = 64


def executor_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The executors' command-line options, for every command that launches a grid of runs (`robust
    sweep`, `robust rare sweep`): --parallel (local processes) and --partition, --gpus, --time-min,
    --array-parallelism (Slurm). The command receives ``parallel`` and ``slurm`` (:class:`SlurmOptions`).
    Place it right above the function, under the command's own options."""
    import functools

    import click

    @functools.wraps(command)
    def with_slurm(*args: Any, partition: str | None, gpus: int, time_min: int, array_parallelism: int, **kwargs: Any):
        slurm = SlurmOptions(partition=partition, gpus=gpus, timeout_min=time_min, array_parallelism=array_parallelism)
        return command(*args, slurm=slurm, **kwargs)

    options = [
        click.option("--parallel", type=int, default=2, show_default=True, help="local: runs at the same time."),
        click.option("--partition", help="slurm: partition."),
        click.option("--gpus", type=int, default=0, show_default=True, help="slurm: GPUs per run."),
        click.option(
            "--time-min", type=int, default=60, show_default=True, help="slurm: time limit per job (minutes)."
        ),
        click.option("--array-parallelism", type=int, default=64, show_default=True, help="slurm: array jobs at once."),
    ]
    for option in reversed(options):
        with_slurm = option(with_slurm)
    return with_slurm


def pending(spec: SweepSpec, root: Path) -> list[SweepRun]:
    from robust.results import RunDir

    return [r for r in spec.runs() if not RunDir(root / r.name).is_finished()]


def launch(
    spec: SweepSpec,
    root: Path,
    *,
    executor: str = "local",
    parallel: int = 2,
    slurm: SlurmOptions | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run every unfinished run of ``spec`` under ``root``; ``{run name: outcome}``."""
    root.mkdir(parents=True, exist_ok=True)
    todo = pending(spec, root)
    total = len(spec.runs())
    progress(f"{total - len(todo)} of {total} runs already done; {len(todo)} to run ({executor}).")
    return execute(
        {r.name: (r, root / r.name) for r in todo},
        root / ".submitit",
        executor=executor,
        parallel=parallel,
        slurm=slurm,
        nproc=spec.nproc,
        progress=progress,
    )


def execute(
    runs: dict[str, tuple[SweepRun, Path]],
    logs: Path,
    *,
    executor: str = "local",
    parallel: int = 2,
    slurm: SlurmOptions | None = None,
    nproc: int = 1,
    progress: Callable[[str], None] = print,
) -> dict[str, str]:
    """Train ``runs`` (name -> run and its directory) with submitit; ``{name: outcome}``. For any
    command that expands its own grid (``robust rare sweep``): finished runs are skipped, interrupted
    ones resume, a failure does not stop the others and ends in one error naming them."""
    import submitit

    if not runs:
        return {}
    if executor == "slurm":
        options = slurm or SlurmOptions()
        ex = submitit.AutoExecutor(folder=logs, cluster="slurm")
        params: dict[str, Any] = {
            "timeout_min": options.timeout_min,
            "tasks_per_node": nproc,
            "cpus_per_task": options.cpus,
            "gpus_per_node": options.gpus,
            "slurm_array_parallelism": options.array_parallelism,
        }
        if options.partition:
            params["slurm_partition"] = options.partition
        ex.update_parameters(**params)
        with ex.batch():  # one array job
            jobs = {name: ex.submit(ResumableRun(run, str(out))) for name, (run, out) in runs.items()}
        return {name: job.results()[0] for name, job in jobs.items()}
    if executor != "local":
        raise ConfigError(f"Unknown executor {executor!r}: expected local or slurm.")
    local = submitit.LocalExecutor(folder=logs)
    local.update_parameters(timeout_min=24 * 60, tasks_per_node=nproc)
    outcomes: dict[str, str] = {}
    queue, running = list(runs.items()), {}
    while queue or running:
        while queue and len(running) < max(1, parallel):
            name, (run, out) = queue.pop(0)
            running[name] = local.submit(run_one, run, str(out))
        time.sleep(0.2)
        for name, job in list(running.items()):
            if job.done():
                try:
                    outcomes[name] = job.results()[0]  # a run over several tasks: rank 0 speaks
                except Exception as exc:
                    outcomes[name] = (
                        f"failed ({str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__})"
                    )
                progress(f"{outcomes[name]}: {name}")
                del running[name]
    failed = sorted(n for n, o in outcomes.items() if o.startswith("failed"))
    if failed:
        raise ConfigError(
            f"{len(failed)} of {len(runs)} runs failed ({', '.join(failed[:5])}{'...' if len(failed) > 5 else ''}); "
            f"their logs are in {logs}. Fix the cause and launch the sweep again: finished runs are kept."
        )
    return outcomes
