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
