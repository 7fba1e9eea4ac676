"""Reading run directories back and aggregating them over seeds, per method, dataset and model.

Torch-free, so that ``robust report`` is quick. Values stay fractions here; rendering prints percents.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robust.api import RunDir, RunDirError

#: The file a finished run directory holds (robust.api's RunDir.summary_path): how runs are found.
SUMMARY = RunDir(".").summary_path.name
DEFAULT_METRICS = (
    "test/avg_acc",
    "test/worst_group_acc",
    "test/group_mean_acc",
    "test/train_weighted_acc",
    "test/conflicting_acc",
    "val/worst_group_acc",
    "val/avg_acc",
)
#: ``--spread``: the standard error of the mean (stdev / sqrt(n), the default: how precisely the mean is
#: known) or the standard deviation over seeds (how much one run varies); how captions name each.
SPREADS = {"se": "s.e.", "sd": "s.d."}
#: Selection rules that read the validation split's group labels.
VAL_GROUP_RULES = ("best_val_worst_group",)


def spread_caption(spread: str) -> str:
    """``mean ± s.e. over seeds``: what every rendering says its ± is."""
    return f"mean ± {SPREADS[spread]} over seeds"


@dataclass(frozen=True)
class Stats:
    """A mean over seeds and its spread: the standard deviation and the standard error of the mean
    (both 0 for a single seed)."""

    mean: float
    std: float
    n: int

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n)

    def spread(self, kind: str) -> float:
        """The spread ``--spread`` names: ``se`` or ``sd``."""
        return self.se if kind == "se" else self.std

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "se": self.se, "n": self.n}


def stats(values: Sequence[float] | None) -> Stats | None:
    """Mean, standard deviation and n of ``values``; None without any."""
    if not values:
        return None
    return Stats(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def find_summaries(paths: list[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every finished run (a directory with summary.json) under ``paths``."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for root in map(Path, paths):
        if not root.exists():
            raise RunDirError(
                f"{str(root)!r} does not exist. Pass run directories (or folders that contain them) to `robust report`."
            )
        candidates = [root / SUMMARY] if (root / SUMMARY).is_file() else sorted(root.rglob(SUMMARY))
        for path in candidates:
            found.append((path.parent, check_summary(path, _read_json(path, "a run's final metrics"))))
    if not found:
        raise RunDirError(
            f"No finished runs under {', '.join(map(str, paths))}: a finished run directory holds {SUMMARY}. "
            "Interrupted runs can be finished with `robust run ... --resume --out DIR`."
        )
    return found


@dataclass
class Row:
    """One (method, dataset, model) cell: a list of values per metric, one per seed. ``hyper`` names the
    hyperparameters chosen among ``candidates`` configurations (a sweep), or is empty. ``variant`` names
    the dataset options the rows were split by (``conflict_pct=1``), ``options`` holds the runs' dataset
    options, ``protocol`` their summary's protocol, ``by_rule`` the values under every selection rule and
    ``wall_times`` each run's wall time in seconds (runs that recorded one)."""

    method: str
    dataset: str
    model: str
    selection: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    hyper: str = ""
    candidates: int = 1
    selected_by: str = ""
    variant: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    by_rule: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    #: The runs' opt-outs of their paper's mechanism (``allow_no_masks: ...``, :mod:`robust_counterfactual.fidelity`).
    opt_outs: list[str] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)

    def stats(self, metric: str) -> Stats | None:
        return stats(self.values.get(metric))

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        found = self.stats(metric)
        return None if found is None else (found.mean, found.std)

    def wall_time(self) -> Stats | None:
        """The mean wall time of one run (seconds), over the runs that recorded it."""
        return stats(self.wall_times)


def group_label_use(row: Row) -> tuple[bool | None, bool | None]:
    """Whether the row's runs used group labels (None: not recorded). Training: the protocol gave the
    training data's groups to the method. Validation: the val groups were known and something read
    them: the selection rule (val worst-group), the choice of hyperparameters, or the method (given
    them with the training groups, or alone: ``val_groups_to_method``, DFR)."""
    train = row.protocol.get("train_group_labels")
    val = row.protocol.get("val_group_labels")
    train = train if isinstance(train, bool) else None
    if not isinstance(val, bool):
        return train, None
    read = (
        row.selection in VAL_GROUP_RULES
        or (row.candidates > 1 and row.selected_by == "val/worst_group_acc")
        or bool(train)
        or row.protocol.get("val_groups_to_method") is True
    )
    return train, val and read


IGNORED = {"seed", "versions", "plugins", "data_root", "device"}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a run directory; RunDirError naming the file when it is unreadable or not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        text = str(exc).strip()
        raise RunDirError(
            f"Cannot read {str(path)!r} ({text.splitlines()[0] if text else type(exc).__name__}); it should hold "
            f"{what}, written by robust. Restore it from a backup, or move the run directory out of the folders "
            "you report on."
        ) from None
    if not isinstance(data, dict):
        raise RunDirError(
            f"{str(path)!r} holds a JSON {type(data).__name__}, not an object with {what}. Restore it from a backup, "
            "or move the run directory out of the folders you report on."
        )
    return data


def _damaged(path: Path, key: str, problem: str) -> RunDirError:
    return RunDirError(
        f"{str(path)!r} is damaged: {key} {problem}. Restore it from a backup, or move the run directory out of the "
        "folders you report on."
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_summary(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` when it has what a report reads (names, selection rules with numeric metrics, protocol,
    wall time)."""
    for key in ("method", "dataset"):
        if not isinstance(summary.get(key), str):
            raise _damaged(path, repr(key), "is missing or not a string")
    for key, kind, noun in (("model", str, "a string"), ("default_selection", str, "a string"),
                            ("protocol", dict, "an object"), ("selection", dict, "an object"),
                            ("train", dict, "an object")):  # fmt: skip
        if key in summary and not isinstance(summary[key], kind):
            raise _damaged(path, repr(key), f"is not {noun} (got {type(summary[key]).__name__})")
    if "seed" in summary and not (isinstance(summary["seed"], int) and not isinstance(summary["seed"], bool)):
        raise _damaged(path, "'seed'", f"is not an integer (got {summary['seed']!r})")
    wall = summary.get("train", {}).get("wall_time_s")
    if wall is not None and not (_is_number(wall) and math.isfinite(wall)):
        raise _damaged(path, "train.wall_time_s", f"is not a number of seconds (got {wall!r})")
    for rule, record in summary.get("selection", {}).items():
        metrics = record.get("metrics") if isinstance(record, dict) else None
        if not isinstance(metrics, dict):
            raise _damaged(path, f"selection.{rule}", "has no object 'metrics'")
        bad = next((m for m, v in metrics.items() if not _is_number(v)), None)
        if bad is not None:
            raise _damaged(path, f"selection.{rule}.metrics.{bad}", f"is not a number (got {metrics[bad]!r})")
    return summary


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    config = _read_json(path, "the run's resolved config")
    if config.get("dataset") is not None and not isinstance(config["dataset"], dict):
        raise _damaged(path, "'dataset'", f"is not an object (got {type(config['dataset']).__name__})")
    return config


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json flattened (``method.lr``...), without what does not define the experiment."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in IGNORED:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": json.dumps(v, sort_keys=True) for k, v in value.items()})
        else:
            flat[key] = json.dumps(value, sort_keys=True)
    return flat


def option_text(value: Any) -> str:
    """A dataset option's value as a row's name shows it: ``1``, not ``1.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def aggregate(
    summaries: list[tuple[Path, dict[str, Any]]],
    selection: str | None = None,
    split_by: Mapping[str, Collection[str]] | None = None,
) -> list[Row]:
    """Group runs by method, dataset and model; collect each metric under the chosen selection rule.

    Where runs of one method, dataset and model differ in configuration beyond the seed (a sweep),
    the configuration is chosen as DomainBed and SubpopBench do: the best mean over seeds of the
    validation worst-group accuracy when the validation groups are known, of the validation average
    accuracy when not; its test metrics are reported. Runs on other data are other rows, never
    candidates: dataset options that differ between runs of a dataset (``conflict_pct``, a CSV
    dataset's ``metadata``) name the row, as do ``split_by``'s (``{"cmnist": ["conflict_pct"]}``),
    and so does a non-default label protocol.
    """
    groups: dict[tuple[Any, ...], dict[str, Row]] = defaultdict(dict)
    configs: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = defaultdict(dict)
    run_configs = {run_dir: _read_config(run_dir) for run_dir, _ in summaries}
    varying = _varying_dataset_options(summaries, run_configs)
    for run_dir, summary in summaries:
        rule = selection or summary.get("default_selection", "last")
        chosen = summary.get("selection", {}).get(rule)
        if chosen is None:
            continue
        config = run_configs[run_dir]
        options = {k: v for k, v in (config.get("dataset") or {}).items() if k != "name"}
        split = sorted(set((split_by or {}).get(summary["dataset"], ())) | varying.get(summary["dataset"], set()))
        variant = ", ".join(
            [*(f"{k}={option_text(options[k])}" for k in split if k in options), *protocol_tags(summary)]
        )
        key = (summary["method"], summary["dataset"], summary.get("model", ""), variant)
        flat = {k: v for k, v in _flat_config(config).items() if k not in PROTOCOL_KEYS}
        hp = json.dumps(flat, sort_keys=True)
        configs[key][hp] = flat
        row = groups[key].setdefault(
            hp, Row(*key[:3], selection=rule, variant=variant, options=options, protocol=summary.get("protocol", {}))
        )
        row.seeds.append(summary.get("seed", 0))
        for opt_out in opt_out_labels(summary):
            if opt_out not in row.opt_outs:
                row.opt_outs.append(opt_out)
        for metric, value in chosen["metrics"].items():
            row.values[metric].append(float(value))
        for other, record in summary.get("selection", {}).items():
            for metric, value in record.get("metrics", {}).items():
                row.by_rule[other][metric].append(float(value))
        if (wall := summary.get("train", {}).get("wall_time_s")) is not None:
            row.wall_times.append(float(wall))
        if summary.get("protocol", {}).get("val_group_labels"):
            row.selected_by = "val/worst_group_acc"
    rows = []
    for key in sorted(groups):
        candidates = groups[key]
        if len(candidates) == 1:
            rows.append(next(iter(candidates.values())))
            continue
        best_hp, best = max(candidates.items(), key=lambda item: _validation_score(item[1]))
        options = configs[key]
        differing = sorted(k for k in options[best_hp] if len({c.get(k) for c in options.values()}) > 1)
        best.hyper = ", ".join(f"{k.removeprefix('method.')}={json.loads(options[best_hp][k])}" for k in differing)
        best.candidates = len(candidates)
        best.selected_by = best.selected_by or "val/avg_acc"
        rows.append(best)
    return rows


def _varying_dataset_options(
    summaries: list[tuple[Path, dict[str, Any]]], configs: dict[Path, dict[str, Any]]
) -> dict[str, set[str]]:
    """Per dataset, the options whose value differs between its runs (other data, not a hyperparameter)."""
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run_dir, summary in summaries:
        options = {k: v for k, v in (configs[run_dir].get("dataset") or {}).items() if k not in ("name", "groups")}
        seen[summary["dataset"]].append(options)
    varying = {}
    for dataset, runs in seen.items():
        keys = {k for options in runs for k in options}
        varying[dataset] = {k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in runs}) > 1}
    return varying


#: Config keys of the label protocol: runs that differ in them are different experiments (separate
#: rows), not hyperparameter candidates (their validation scores are not comparable).
PROTOCOL_KEYS = {"train_attr", "val_attr", "dataset.groups"}


def protocol_tags(summary: dict[str, Any]) -> list[str]:
    """How a run's label protocol differs from the default, for a row's name."""
    protocol = summary.get("protocol", {})
    tags = []
    if protocol.get("train_attr") == "no":
        tags.append("train groups withheld")
    if protocol.get("val_attr") == "no":
        tags.append("val groups withheld")
    if protocol.get("inferred_groups"):
        tags.append("inferred groups")
    tags += [f"opt-out {option}" for option in sorted({o.get("option", "?") for o in _opt_outs(summary)})]
    return tags


def _opt_outs(summary: dict[str, Any]) -> list[dict[str, str]]:
    opt_outs = summary.get("opt_outs") or []
    return [o for o in opt_outs if isinstance(o, dict)] if isinstance(opt_outs, list) else []


def opt_out_labels(summary: dict[str, Any]) -> list[str]:
    """``option: detail`` for each part of its paper's method a run opted out of."""
    return [f"{o.get('option', '?')}: {o.get('detail', '')}" for o in _opt_outs(summary)]


def _validation_score(row: Row) -> float:
    metric = row.selected_by or "val/avg_acc"
    values = row.values.get(metric) or row.values.get("val/avg_acc") or [float("-inf")]
    return statistics.fmean(values)


def pick_metrics(rows: list[Row], requested: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The metrics asked for, or the default ones that some row recorded."""
    if requested:
        return list(requested)
    return [m for m in DEFAULT_METRICS if any(m in r.values for r in rows)]
