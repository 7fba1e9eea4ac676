"""Papers' headline numbers: the register_paper_results hook and the registry, with a toy plugin's numbers
(`robust report --against-paper` is robust-report's: packages/report/tests/test_paper_comparison.py;
tests/integration checks every method package's paper_results.toml)."""

from __future__ import annotations

import pytest

from robust import hookimpl
from robust.errors import PluginError
from robust.papers import PaperResult, make_result, register_from_toml
from robust.registry import get_registry
from robust.testing import TOY_PAPER_RESULT, ToyPaperResults

ENTRY = TOY_PAPER_RESULT


# -- the hook and the registry ----------------------------------------------------------------


def test_hook_fills_the_registry(register_plugin):
    with register_plugin(ToyPaperResults(), "toy-papers"):
        registry = get_registry()
        (result,) = registry.papers(method="toy")
        assert result.plugin == "toy-papers"
        assert result.value == 0.8 and result.std == 0.01 and result.dataset_options == {"conflict_pct": 1}
        assert registry.papers(dataset="toyset") == [result]
        assert result.matches("toy", "toyset", {"conflict_pct": 1.0, "image_size": 28})
        assert not result.matches("toy", "toyset", {"conflict_pct": 2.0})
        assert not result.matches("toy", "toyset", {})  # options unknown: no match
        assert not result.matches("other", "toyset", {"conflict_pct": 1})
    assert get_registry().papers(method="toy") == []


def test_a_bad_number_marks_the_plugin_broken_and_the_rest_register(register_plugin):
    from robust.plugins import plugin_records

    class Percent:
        @hookimpl
        def register_paper_results(self, register):
            register(**{**ENTRY, "method": "toy-percent", "value": 80.0})

    with register_plugin(Percent(), "toy-percent"), register_plugin(ToyPaperResults(), "toy-papers"):
        registry = get_registry()
        assert registry.papers(method="toy-percent") == []
        assert len(registry.papers(method="toy")) == 1
        record = next(r for r in plugin_records() if r.name == "toy-percent")
        assert "register_paper_results failed" in record.error and "fraction" in record.error


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"value": 93.3}, "fraction"),
        ({"std": -0.1}, "fraction"),
        ({"metric": "worst_group_acc"}, "not a summary.json key"),
        ({"metric": "test/wga"}, "not a summary.json key"),
        ({"selection": "best_test"}, "selection"),
        ({"source": ""}, "missing source"),
        ({"train_group_labels": "no"}, "train_group_labels"),
        ({"table": 3}, "unknown field"),
    ],
)
def test_invalid_entries_are_refused(change, fragment):
    with pytest.raises(PluginError, match=fragment):
        make_result("toy", **{**ENTRY, **change})


def test_register_from_toml_checks_every_entry_before_registering(tmp_path, monkeypatch):
    package = tmp_path / "toy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    good = 'source = "S"\nselection = "last"\nmetric = "test/avg_acc"\nmethod = "m"\ndataset = "d"\n'
    (package / "paper_results.toml").write_text(
        f"[defaults]\n{good}\n[[result]]\nvalue = 0.5\n\n[[result]]\nvalue = 50\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registered = []
    with pytest.raises(PluginError, match=r"toy_pkg/paper_results.toml, result 2: .*fraction"):
        register_from_toml(lambda **fields: registered.append(fields), "toy_pkg")
    assert registered == []
    (package / "paper_results.toml").write_text(f"[defaults]\n{good}\n[[result]]\nvalue = 0.5\n", encoding="utf-8")
    assert register_from_toml(lambda **fields: registered.append(fields), "toy_pkg") == 1
    assert registered == [
        {"source": "S", "selection": "last", "metric": "test/avg_acc", "method": "m", "dataset": "d", "value": 0.5}
    ]


def test_paper_result_is_plain_data():
    result = PaperResult("m", "d", "test/avg_acc", 0.5, "S", "unknown")
    assert result.selection_label == "not stated" and result.options_label == ""
