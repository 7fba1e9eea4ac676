"""Whether another run's classifier may stand in for this run's ERM phase (``--from RUN_DIR``).

PruSC prunes, and IRM-AFE clusters, the ERM model it loads, while this run's ``config.json`` says
what that model is: its dataset, architecture, model options and input size. Pretrained weights
and the input size change no weight shape, so a classifier trained from scratch, or at another
resolution, loads without complaint and would be reported as the one the config describes.
Every difference is therefore refused, before any weight is loaded.
"""

from __future__ import annotations

from typing import Any

from robust.api import ConfigError, RunConfig

#: What each compared setting is, in the words of the error message.
LABELS = {
    "model.name": "model",
    "model.weights": "pretrained weights",
    "dataset.image_size": "input size",
}
#: Dataset options that set the size of the images the model sees.
INPUT_SIZE_OPTIONS = ("image_size",)
_UNSET = object()


def erm_source_differences(theirs: dict[str, Any], ours: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(setting, theirs, ours)`` for every model option and input size that differs (dataset aside)."""
    differences = []
    their_model, our_model = theirs.get("model", {}), ours.model
    if their_model.get("name") != our_model.get("name"):  # the other options belong to the model: not compared
        differences.append(("model.name", their_model.get("name", _UNSET), our_model.get("name", _UNSET)))
    else:
        for key in sorted(set(their_model) | set(our_model)):
            a, b = their_model.get(key, _UNSET), our_model.get(key, _UNSET)
            if a != b:
                differences.append((f"model.{key}", a, b))
    their_data, our_data = theirs.get("dataset", {}), ours.dataset
    for key in INPUT_SIZE_OPTIONS:
        a, b = their_data.get(key, _UNSET), our_data.get(key, _UNSET)
        if a != b:
            differences.append((f"dataset.{key}", a, b))
    return differences


def check_erm_source(from_run: str, theirs: dict[str, Any], ours: RunConfig) -> None:
    """Refuse ``--from from_run`` (whose ``config.json`` is ``theirs``) unless its classifier is this run's."""
    their_dataset = theirs.get("dataset", {}).get("name")
    if their_dataset != ours.dataset_name:
        raise ConfigError(
            f"--from {from_run!r} trained on dataset {their_dataset!r}, but this run uses {ours.dataset_name!r}: the "
            f"ERM model must match. Pass --dataset {their_dataset}, or train the ERM phase here (drop --from)."
        )
    differences = erm_source_differences(theirs, ours)
    if not differences:
        return
    listed = "; ".join(
        f"{LABELS.get(key, 'model option')} ({key}): {_show(a)} there, {_show(b)} here" for key, a, b in differences
    )
    preset = f"preset {ours.preset!r}" if ours.preset else "no preset"
    raise ConfigError(
        f"--from {from_run!r} trained model {theirs.get('model', {}).get('name')!r} with other settings than this "
        f"run ({ours.method_name}, dataset {ours.dataset_name!r}, {preset}) describes: {listed}. The loaded "
        "classifier is what the method prunes or clusters, and this run's config.json would describe another one. "
        f"Either train the ERM model with this run's settings (robust run erm --dataset {ours.dataset_name} --out "
        "DIR, with the same --model and --set model.*/dataset.* options; the core's ERM preset for the dataset uses "
        "the backbone of the method's preset) and pass that directory to --from, or give this run the settings of "
        "the loaded one (--model, --set model.OPTION=..., --set dataset.image_size=...), or drop --from to train "
        "the ERM phase here."
    )


def _show(value: Any) -> str:
    return "unset" if value is _UNSET else repr(value)
