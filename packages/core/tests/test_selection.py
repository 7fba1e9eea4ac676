"""Selection rules: the oracle rule maximises the dataset's declared test metric."""

from __future__ import annotations

from robust.selection import Selector, rule_label


def _record(step: int, **metrics: float) -> dict:
    return {"phase": "train", "epoch": 0, "step": step, "metrics": metrics}


def test_oracle_follows_the_datasets_test_metric():
    records = [
        _record(1, **{"test/avg_acc": 0.9, "test/conflicting_acc": 0.5, "val/avg_acc": 0.9}),
        _record(2, **{"test/avg_acc": 0.8, "test/conflicting_acc": 0.7, "val/avg_acc": 0.8}),
    ]
    plain, bffhq = Selector(), Selector(test_metric="conflicting_acc")
    for record in records:
        plain.update(record)
        bffhq.update(record)
    assert plain.best["oracle_test"]["step"] == 1
    assert bffhq.best["oracle_test"]["step"] == 2
    assert bffhq.best["best_val_avg"]["step"] == 1
    assert "conflicting_acc" in rule_label("oracle_test", "conflicting_acc")
    assert rule_label("oracle_test") == "oracle (max test acc)"


def test_val_auc_rule_is_the_default_where_the_dataset_computes_it():
    from robust.selection import default_rule

    selector = Selector()
    selector.update(_record(1, **{"val/macro_auc": 0.9, "val/avg_acc": 0.5, "val/worst_class_acc": 0.1}))
    selector.update(_record(2, **{"val/macro_auc": 0.8, "val/avg_acc": 0.6, "val/worst_class_acc": 0.2}))
    assert selector.best["best_val_auc"]["step"] == 1 and selector.best["best_val_avg"]["step"] == 2
    assert default_rule(list(selector.best)) == "best_val_auc"
    assert default_rule(["best_val_worst_class", "best_val_avg", "last"]) == "best_val_worst_class"
