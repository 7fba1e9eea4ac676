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
exactly (``lr=0.001,lambda_=0.5``; ``default`` without a grid): floats by their shortest exact
form, so 1e-3 and 1.0001e-3 are two runs, and each run is given its value exactly. A name that
would need characters a file system dislikes (quoted strings, spaces, slashes) or is too long
keeps a readable prefix and gains ``~`` and a hash of the exact text; the exact values are in the
run's ``config.json``. A run with a ``summary.json`` is done and
skipped; one with a ``config.json`` but no summary was interrupted and resumes from its
checkpoint; the others start. Local workers die with the launcher (a watchdog in each, since
submitit's local jobs outlive it by design), and a relaunch waits for a run directory's writer to
finish before deciding, so a run finished meanwhile is skipped, not reported failed. With ``nproc`` > 1 each run is one job of that many tasks
(submitit's ``tasks_per_node``, local processes or Slurm tasks) that join one process group: the
run is data-parallel exactly as under torchrun (:mod:`robust.distributed`).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robust.api import ConfigError, RunDirError, toml_literal

KEYS = {"methods", "datasets", "seeds", "epochs", "steps", "set", "grid", "methods_grid", "name", "nproc"}
EXPECTED = (
    "a TOML file with methods = [...], datasets = [...], and optionally seeds = [...], epochs, steps, nproc, "
    "[set] (options of every run), [grid] (lists to combine) and [methods_grid.METHOD]"
)


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
        hp = ",".join(f"{k}={_shown(v)}" for k, v in self.hyper) or "default"
        return f"{_component(self.method)}/{_component(self.dataset)}/{_component(hp)}/seed{self.seed}"

    def all_sets(self) -> list[str]:
        return [*self.sets, *(f"{k}={toml_literal(v)}" for k, v in self.hyper)]


_PLAIN = re.compile(r"[A-Za-z0-9_.+\-]+")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.,=+\-\[\]]+")
MAX_COMPONENT = 120


def _shown(v: Any) -> str:
    """A grid value as its run name shows it: exact, and distinct for distinct values.

    A string is shown bare when reading it back as a ``--set`` value gives the same string (``adam``,
    not ``1`` or ``true``); everything else is its TOML literal (floats by their shortest exact repr).
    """
    from robust.api import parse_value

    if isinstance(v, str) and _PLAIN.fullmatch(v) and parse_value(v) == v:
        return v
    literal = toml_literal(v)
    return literal if '"' in literal else literal.replace(", ", ",")  # [0.1,0.2]: no space in a name


def _component(text: str) -> str:
    """One directory name for ``text``: itself when it is a plain, short name; otherwise a readable
    prefix, ``~`` and a hash of the exact text (never equal for two texts, nor to a plain name)."""
    if _NAME_CHARS.fullmatch(text) and len(text) <= MAX_COMPONENT and text not in (".", ".."):
        return text
    readable = re.sub(r"[^A-Za-z0-9_.,=+\-\[\]]+", "_", text)[:80].strip(".")
    return f"{readable}~{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


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
        if not path.is_file():
            raise ConfigError(f"No sweep spec at {str(path)!r}: expected {EXPECTED}.")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"Sweep spec {str(path)!r} is not valid TOML ({exc}); expected {EXPECTED}.") from None
        except OSError as exc:
            raise ConfigError(f"Cannot read the sweep spec {str(path)!r} ({exc.strerror or exc}).") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "<sweep spec>") -> SweepSpec:
        """A spec from its parsed TOML; every malformed key is a ConfigError naming ``where`` and the key."""
        import difflib

        def fail(key: str, problem: str) -> ConfigError:
            return ConfigError(f"Sweep spec {where!r}, key `{key}`: {problem}. Expected {EXPECTED}.")

        unknown = sorted(set(data) - KEYS)
        if unknown:
            hints = [m for k in unknown for m in difflib.get_close_matches(k, sorted(KEYS), n=1)]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise fail(unknown[0], f"unknown key{'s' if len(unknown) > 1 else ''} {unknown}{hint}")
        names = {}
        for key in ("methods", "datasets"):
            names[key] = _list_of(data.get(key), key, str, fail)
            if not names[key] or not all(n.strip() for n in names[key]):
                raise fail(key, f"must be a non-empty list of {key[:-1]} names, got {data.get(key)!r}")
        seeds = _list_of(data.get("seeds", [0]), "seeds", int, fail)
        if not seeds or any(not 0 <= s < 2**63 for s in seeds):
            raise fail("seeds", f"must be a non-empty list of integers from 0 to 2**63 - 1, got {seeds!r}")
        flags = {}
        for key in ("epochs", "steps"):
            if key in data:
                if not _is_int(data[key]) or data[key] < 1:
                    raise fail(key, f"must be a positive integer (--{key} of every run), got {data[key]!r}")
                flags[key] = data[key]
        nproc = data.get("nproc", 1)
        if not _is_int(nproc) or nproc < 1:
            raise fail("nproc", f"must be a positive integer (processes per run), got {nproc!r}")
        if "name" in data and not isinstance(data["name"], str):
            raise fail("name", f"must be a string, got {data['name']!r}")
        sets = data.get("set", {})
        if not isinstance(sets, dict):
            raise fail("set", f'must be a table of options ([set] then "dataset.image_size" = 32), got {sets!r}')
        for option in sets:
            if not option.strip() or any(not part.strip() for part in option.split(".")):
                raise fail(
                    f"set.{option}", "is not an option name (expected KEY or SECTION.KEY, e.g. lr or dataset.frac)"
                )
        grid = _grid(data.get("grid", {}), "grid", fail)
        per_method = data.get("methods_grid", {})
        if not isinstance(per_method, dict):
            raise fail("methods_grid", f"must be a table of tables ([methods_grid.METHOD]), got {per_method!r}")
        methods_grid = {}
        for method, table in per_method.items():
            if method not in names["methods"]:
                raise fail(f"methods_grid.{method}", f"{method!r} is not one of the spec's methods {names['methods']}")
            methods_grid[method] = _grid(table, f"methods_grid.{method}", fail)
        for key, values in names.items():
            if len(set(values)) != len(values):
                raise fail(key, f"lists a name twice ({values!r}): each run would be trained once anyway")
        if len(set(seeds)) != len(seeds):
            raise fail("seeds", f"lists a seed twice ({seeds!r})")
        spec = cls(names["methods"], names["datasets"], seeds, dict(sets), grid, methods_grid, flags, nproc)
        try:
            for run in spec.runs():
                run.all_sets()
        except ConfigError as exc:
            raise ConfigError(f"Sweep spec {where!r}: {exc}") from None
        return spec

    def runs(self) -> list[SweepRun]:
        """Every run, in a stable order (method, dataset, grid values, seed)."""
        fixed = tuple(f"{k}={toml_literal(v)}" for k, v in sorted(self.sets.items()))
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list_of(value: Any, key: str, kind: type, fail: Callable[[str, str], ConfigError]) -> list[Any]:
    if not isinstance(value, list) or not all(_is_int(v) if kind is int else isinstance(v, kind) for v in value):
        noun = "integers" if kind is int else "strings"
        raise fail(
            key, f"must be a list of {noun} (e.g. {key} = {'[0, 1, 2]' if kind is int else '[...]'}), got {value!r}"
        )
    return list(value)


def _grid(table: Any, key: str, fail: Callable[[str, str], ConfigError]) -> dict[str, list[Any]]:
    """A [grid] table: option -> non-empty list of distinct values (two equal values would be one run)."""
    if not isinstance(table, dict):
        raise fail(key, f"must be a table of lists ([{key}] then lr = [0.1, 0.01]), got {table!r}")
    for option, values in table.items():
        if not option.strip() or any(not part.strip() for part in option.split(".")):
            raise fail(
                f"{key}.{option}", "is not an option name (expected KEY or SECTION.KEY, e.g. lr or dataset.frac)"
            )
        if not isinstance(values, list) or not values:
            raise fail(
                f"{key}.{option}", f"must be a non-empty list of values (e.g. {option} = [0.1, 0.01]), got {values!r}"
            )
        shown = [(type(v).__name__, _shown(v)) for v in values]
        if len(set(shown)) != len(shown):
            raise fail(f"{key}.{option}", f"lists a value twice ({values!r})")
    return {k: list(v) for k, v in table.items()}


def run_one(run: SweepRun, out: str, launcher: tuple[int, str | None] | None = None) -> str:
    """Train one run of a sweep (in the worker process): start it, or resume it if it was interrupted.
    A job with several tasks (``nproc``) is one data-parallel run: its tasks join one process group.
    ``launcher`` (pid, start time) is the local sweep process: this worker dies when it does."""
    from robust.api import Run, RunDir, distributed, resolve_run_config

    if launcher is not None:
        watch_launcher(*launcher)

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
        if distributed.world().is_main:
            wait_for_writer(Path(out))  # a worker of a killed launcher may still be finishing this run
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


#: How long a relaunched worker waits for another writer of its run directory (a worker of the
#: killed launcher dies within a second; a longer holder is a live run, reported as busy).
WRITER_WAIT_S = 15.0


def wait_for_writer(directory: Path, timeout: float = WRITER_WAIT_S) -> None:
    """Return once no process holds ``directory``'s run lock; RunDirError naming the holder after ``timeout``."""
    from robust.api import RunLock

    if not directory.is_dir():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            RunLock(directory, "robust sweep").acquire().release()
            return
        except RunDirError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (None where there is no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """A token that changes when ``pid`` is reused: its start time (None where there is no /proc)."""
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22 of proc(5); fields[0] is field 3


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    if fields is None:
        return start is None
    return fields[0] != "Z" and (start is None or fields[19] == start)  # a zombie or a reused pid is gone


def watch_launcher(pid: int, start: str | None, interval: float = 0.5) -> threading.Thread:
    """Kill this process (SIGKILL, as its launcher died) once process ``pid`` is gone.

    submitit's local jobs are built to outlive the Python session that submitted them; a sweep's
    workers must not, or a relaunch would meet them still writing. The run lock dies with the
    worker, and the run resumes from its last checkpoint on the next launch."""

    def watch() -> None:
        while _alive(pid, start):
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="robust-sweep-watchdog", daemon=True)
    thread.start()
    return thread


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
    from robust.api import RunDir

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
    launcher = (os.getpid(), process_start(os.getpid()))  # the workers die with this process
    local = submitit.LocalExecutor(folder=logs)
    local.update_parameters(timeout_min=24 * 60, tasks_per_node=nproc)
    outcomes: dict[str, str] = {}
    queue, running = list(runs.items()), {}
    while queue or running:
        while queue and len(running) < max(1, parallel):
            name, (run, out) = queue.pop(0)
            running[name] = local.submit(run_one, run, str(out), launcher)
        time.sleep(0.2)
        for name, job in list(running.items()):
            if job.done():
                try:
                    outcomes[name] = job.results()[0]  # a run over several tasks: rank 0 speaks
                except Exception as exc:
                    text = str(exc).strip()
                    last = text.splitlines()[-1] if text else type(exc).__name__
                    # another process writes the run (RunDirError from the lock): busy, not failed
                    outcomes[name] = f"{'busy' if 'RunDirError' in text else 'failed'} ({last})"
                progress(f"{outcomes[name]}: {name}")
                del running[name]
    failed = sorted(n for n, o in outcomes.items() if o.startswith("failed"))
    busy = sorted(n for n, o in outcomes.items() if o.startswith("busy"))
    if failed:
        raise ConfigError(
            f"{len(failed)} of {len(runs)} runs failed ({', '.join(failed[:5])}{'...' if len(failed) > 5 else ''}); "
            f"their logs are in {logs}. Fix the cause and launch the sweep again: finished runs are kept."
            + (f" {len(busy)} more were being written by other robust processes." if busy else "")
        )
    if busy:
        raise RunDirError(
            f"{len(busy)} of {len(runs)} runs are being written by other robust processes ({outcomes[busy[0]]}"
            f"{'; ...' if len(busy) > 1 else ''}), so this sweep left them alone. Launch the sweep again once those "
            "processes end: finished runs are kept and interrupted ones resume."
        )
    return outcomes
