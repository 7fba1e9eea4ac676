"""Papers' headline numbers, as data, for ``robust report --against-paper``.

A method package ships the numbers its paper reports in a TOML file (``paper_results.toml`` next
to its plugin module) and registers them through the ``register_paper_results`` hook, usually with
:func:`register_from_toml`. Each number carries the protocol it was obtained under (model
selection, group labels, model), so that a report can say where a comparison is not like for like.

Values are fractions in [0, 1], as ``summary.json`` stores accuracies; reports print percents.
Torch-free.
"""

from __future__ import annotations

import importlib.resources
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from robust.errors import PluginError
from robust.selection import LABELS, RULES

#: Metric names (the part after ``split/``) that evaluations write to ``summary.json``; see robust.metrics.
METRIC_NAMES = frozenset(
    {
        "avg_acc",
        "worst_class_acc",
        "worst_group_acc",
        "group_mean_acc",
        "train_weighted_acc",
        "aligned_acc",
        "conflicting_acc",
        "unbiased_acc",
        "unbiased_cellmean_acc",
        "macro_auc",
    }
)
#: Selection rules a paper may use: robust's rules, or "unknown" when the paper does not say.
SELECTIONS = (*RULES, "unknown")
FIELDS = (
    "method",
    "dataset",
    "metric",
    "value",
    "source",
    "selection",
    "std",
    "dataset_options",
    "train_group_labels",
    "val_group_labels",
    "model",
    "verified",
    "note",
)
REQUIRED = ("method", "dataset", "metric", "value", "source", "selection")
RESOURCE = "paper_results.toml"


class RegisterPaperResult(Protocol):
    """The callable a ``register_paper_results`` hook receives."""

    def __call__(
        self,
        *,
        method: str,
        dataset: str,
        metric: str,
        value: float,
        source: str,
        selection: str,
        std: float | None = None,
        dataset_options: Mapping[str, Any] | None = None,
        train_group_labels: bool | None = None,
        val_group_labels: bool | None = None,
        model: str | None = None,
        verified: bool = True,
        note: str = "",
    ) -> None: ...


@dataclass(frozen=True)
class PaperResult:
    """One number a paper reports, and how it was obtained.

    ``dataset_options`` are the dataset options the number is for (``{"conflict_pct": 1}``); a run
    matches when its dataset has each of them. ``selection`` is a rule of ``robust.selection``
    (``oracle_test`` = best test accuracy over training) or ``"unknown"``. The group-label flags
    and ``model`` (a registered model name) are None when the paper does not say.
    """

    method: str
    dataset: str
    metric: str
    value: float
    source: str
    selection: str
    std: float | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train_group_labels: bool | None = None
    val_group_labels: bool | None = None
    model: str | None = None
    verified: bool = True
    note: str = ""
    plugin: str = ""

    def matches(self, method: str, dataset: str, options: Mapping[str, Any]) -> bool:
        """Whether a run of ``method`` on ``dataset`` with these dataset options is what this number is for."""
        if method != self.method or dataset != self.dataset:
            return False
        return all(key in options and same_value(options[key], want) for key, want in self.dataset_options.items())

    @property
    def options_label(self) -> str:
        """``conflict_pct=0.5, ...`` (empty without options)."""
        return ", ".join(f"{key}={format_value(value)}" for key, value in sorted(self.dataset_options.items()))

    @property
    def selection_label(self) -> str:
        return "not stated" if self.selection == "unknown" else LABELS[self.selection]


def same_value(a: Any, b: Any) -> bool:
    """Option values compare as TOML writes them: 1 == 1.0, otherwise plain equality."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fail(plugin: str, fields: Mapping[str, Any], problem: str) -> PluginError:
    what = f"{fields.get('method', '?')} on {fields.get('dataset', '?')} ({fields.get('metric', '?')})"
    return PluginError(f"Paper result {what} registered by {plugin or 'a plugin'}: {problem}")


def make_result(plugin: str, **fields: Any) -> PaperResult:
    """Validate one registration and build its record; raise PluginError saying what is wrong."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise _fail(plugin, fields, f"unknown field(s) {', '.join(unknown)}; expected {', '.join(FIELDS)}.")
    missing = [name for name in REQUIRED if fields.get(name) in (None, "")]
    if missing:
        raise _fail(plugin, fields, f"missing {', '.join(missing)}.")
    for name in ("method", "dataset", "metric", "source", "selection"):
        if not isinstance(fields[name], str):
            raise _fail(plugin, fields, f"{name} must be a string, not {fields[name]!r}.")
    split, _, metric = fields["metric"].partition("/")
    if not split or metric not in METRIC_NAMES:
        raise _fail(
            plugin,
            fields,
            f"metric {fields['metric']!r} is not a summary.json key: expected SPLIT/NAME (test/worst_group_acc) "
            f"with NAME one of {', '.join(sorted(METRIC_NAMES))}.",
        )
    for name in ("value", "std"):
        number = fields.get(name)
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0.0 <= float(number) <= 1.0:
            raise _fail(plugin, fields, f"{name} must be a fraction in [0, 1] (93.3 % is 0.933), not {number!r}.")
    if fields["selection"] not in SELECTIONS:
        raise _fail(plugin, fields, f"selection {fields['selection']!r} is not one of {', '.join(SELECTIONS)}.")
    options = fields.get("dataset_options") or {}
    if not isinstance(options, Mapping) or not all(isinstance(v, (str, int, float, bool)) for v in options.values()):
        raise _fail(plugin, fields, "dataset_options must be a table of option names to plain values.")
    for name in ("train_group_labels", "val_group_labels"):
        if fields.get(name) is not None and not isinstance(fields[name], bool):
            raise _fail(plugin, fields, f"{name} must be true, false or left out (unknown).")
    if not isinstance(fields.get("verified", True), bool):
        raise _fail(plugin, fields, "verified must be true or false.")
    for name in ("model", "note"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise _fail(plugin, fields, f"{name} must be a string.")
    std = fields.get("std")
    return PaperResult(
        method=fields["method"],
        dataset=fields["dataset"],
        metric=fields["metric"],
        value=float(fields["value"]),
        source=fields["source"],
        selection=fields["selection"],
        std=None if std is None else float(std),
        dataset_options=dict(options),
        train_group_labels=fields.get("train_group_labels"),
        val_group_labels=fields.get("val_group_labels"),
        model=fields.get("model") or None,
        verified=fields.get("verified", True),
        note=fields.get("note") or "",
        plugin=plugin,
    )


def make_register(plugin: str, sink: list[PaperResult]) -> Callable[..., None]:
    """The ``register`` callable handed to one plugin's ``register_paper_results``."""

    def register(**fields: Any) -> None:
        sink.append(make_result(plugin, **fields))

    return register


def read_toml(package: str, resource: str = RESOURCE) -> list[dict[str, Any]]:
    """The entries of a package's results file: each ``[[result]]`` over the file's ``[defaults]``."""
    try:
        text = importlib.resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise PluginError(
            f"Cannot read {resource} of {package} ({exc}): it must ship as package data "
            "([tool.setuptools.package-data] in the package's pyproject.toml)."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(f"{package}/{resource} is not valid TOML: {exc}.") from None
    unknown = sorted(set(data) - {"defaults", "result"})
    if unknown:
        raise PluginError(
            f"{package}/{resource}: unknown table(s) {', '.join(unknown)}; expected [defaults] and [[result]]."
        )
    defaults = data.get("defaults", {})
    return [{**defaults, **entry} for entry in data.get("result", [])]


def register_from_toml(register: Callable[..., None], package: str, resource: str = RESOURCE) -> int:
    """Register every entry of ``package``'s ``paper_results.toml``; return how many.

    The file holds optional ``[defaults]`` (fields shared by every entry) and one ``[[result]]``
    table per number, with the keyword arguments of ``register`` as keys.
    """
    entries = read_toml(package, resource)
    for number, entry in enumerate(entries, start=1):  # all checked first: a bad file registers nothing
        try:
            make_result(package, **entry)
        except PluginError as exc:
            raise PluginError(f"{package}/{resource}, result {number}: {exc}") from None
    for entry in entries:
        register(**entry)
    return len(entries)
