"""Model selection: which evaluation a run reports, recorded under every rule at once.

Rules (each a key of ``summary.json["selection"]``):

* ``best_val_auc``: highest val macro AUC, for datasets that compute it (``DatasetInfo.auc``: CCT,
  as CFGen selects); the default rule where present;
* ``best_val_worst_group``: highest val worst-group accuracy (needs val group labels);
* ``best_val_worst_class``: highest val worst-class accuracy (when val groups are unknown);
* ``best_val_avg``: highest val average accuracy;
* ``last``: the final evaluation;
* ``oracle_test``: highest *test* accuracy (the dataset's ``test_metric``: average accuracy, or
  conflicting accuracy on BFFHQ). This is DisEnt's paper protocol; it peeks at the test set and
  is labelled "oracle" wherever it is shown.

Ties keep the earlier evaluation.
"""

from __future__ import annotations

from typing import Any

RULES: dict[str, str | None] = {
    "best_val_auc": "val/macro_auc",
    "best_val_worst_group": "val/worst_group_acc",
    "best_val_worst_class": "val/worst_class_acc",
    "best_val_avg": "val/avg_acc",
    "last": None,
    "oracle_test": "test/avg_acc",
}

LABELS: dict[str, str] = {
    "best_val_auc": "best val macro AUC",
    "best_val_worst_group": "best val worst-group acc",
    "best_val_worst_class": "best val worst-class acc",
    "best_val_avg": "best val avg acc",
    "last": "last",
    "oracle_test": "oracle (max test acc)",
}
#: The rules as table headers show them (``robust run``'s end-of-run table, ``robust report``).
SHORT_LABELS: dict[str, str] = {
    "best_val_auc": "val auc",
    "best_val_worst_group": "val wg",
    "best_val_worst_class": "val wc",
    "best_val_avg": "val avg",
    "last": "last",
    "oracle_test": "oracle",
}


def default_rule(available: list[str]) -> str:
    """The rule a report shows first: group-aware when val groups exist, as the field does."""
    for rule in ("best_val_auc", "best_val_worst_group", "best_val_worst_class", "best_val_avg", "last"):
        if rule in available:
            return rule
    return "last"


def rule_labels(short: bool = False) -> dict[str, str]:
    """Every rule and how it is shown, in full or as a table header (``short``): for commands that
    print results, so that they name the rules as ``robust run`` does."""
    return dict(SHORT_LABELS if short else LABELS)


def rule_label(rule: str, test_metric: str = "avg_acc") -> str:
    """How a rule is shown; the oracle rule names the test metric it maximises when not the average."""
    if rule == "oracle_test" and test_metric != "avg_acc":
        return f"oracle (max test {test_metric})"
    return LABELS[rule]


class Selector:
    """Tracks, for every rule, the best evaluation record so far."""

    def __init__(self, state: dict[str, Any] | None = None, test_metric: str = "avg_acc") -> None:
        self.best: dict[str, dict[str, Any]] = dict(state or {})
        self.keys = {**RULES, "oracle_test": f"test/{test_metric}"}

    def update(self, record: dict[str, Any]) -> list[str]:
        """Consider one evaluation record; return the val-based rules it improved."""
        improved = []
        metrics = record["metrics"]
        for rule, key in self.keys.items():
            if key is None:
                self.best[rule] = record
                continue
            if key not in metrics:
                continue
            current = self.best.get(rule)
            if current is None or metrics[key] > current["metrics"][key]:
                self.best[rule] = record
                if key.startswith("val/"):
                    improved.append(rule)
        return improved

    def state(self) -> dict[str, Any]:
        return dict(self.best)
