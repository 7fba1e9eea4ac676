"""Which group (attribute) labels a method may see: SubpopBench's protocol, made explicit and enforced.

Two switches, recorded in every ``summary.json``:

* ``train_attr`` (``--train-attr``): ``yes`` gives the group and bias labels of the training data
  to a method that uses them (``Method.uses_group_labels``); ``no`` withholds them, and a method
  that needs them is refused; ``auto`` (the default) is ``yes`` exactly when the method uses them.
* ``val_attr`` (``--val-attr``): ``yes`` keeps the validation split's groups, so that model
  selection is by val worst-group accuracy (and a group-using method, or one that reads val's
  groups only, ``Method.uses_val_group_labels`` as DFR, may read them); ``no``
  withholds them from the method *and* from model selection, which then falls back to val
  worst-class accuracy, as SubpopBench does without attributes.

Withheld labels are removed from everything the method is given (its batches and its view of the
dataset), not only from training batches; the test split's groups stay with the engine, which
evaluates. A method that reports how its own inferred groups match the true ones (PruSC's clusters)
asks the engine for the score (``ctx.group_agreement``) instead of reading the labels.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from robust.data import DatasetBundle, Split
from robust.errors import ConfigError


@dataclass(frozen=True)
class AttributeProtocol:
    """What the run gives the method: group labels of training data, of the validation split."""

    train: bool
    val: bool
    train_attr: str
    val_attr: str
    reads_val: bool = False  # the method reads val's groups only (``Method.uses_val_group_labels``)

    def gives(self, split: str) -> bool:
        """Whether the method may see ``split``'s group labels: training splits (and auxiliary sets)
        when the protocol gives train groups, val when it keeps val groups and the method reads them
        (it trains on groups, or reads val's only), test never."""
        if split == "val":
            return self.val and (self.train or self.reads_val)
        return self.train and split != "test"

    def record(self, val_groups_known: bool) -> dict[str, Any]:
        """The protocol as ``summary.json`` records it."""
        return {
            "train_attr": self.train_attr,
            "val_attr": self.val_attr,
            "train_group_labels": self.train,
            "val_group_labels": val_groups_known,
            "val_groups_to_method": val_groups_known and self.gives("val"),
        }


def resolve_protocol(
    method_name: str, uses_group_labels: bool, train_attr: str, val_attr: str, uses_val_group_labels: bool = False
) -> AttributeProtocol:
    """The protocol of a run, or a one-paragraph error when the method needs what it withholds."""
    if train_attr == "no" and uses_group_labels:
        raise ConfigError(
            f"Method {method_name!r} trains on group labels, but --train-attr no withholds them. Run it with "
            "--train-attr yes, or choose a method that needs no group labels (`robust info METHOD` says which "
            "do), or give it inferred groups (`robust discover`, then --set dataset.groups=FILE --train-attr yes)."
        )
    train = uses_group_labels and train_attr != "no"
    return AttributeProtocol(train, val_attr == "yes", train_attr, val_attr, reads_val=uses_val_group_labels)


def without_groups(split: Split) -> Split:
    """The same split with no group and no bias labels."""
    if split.groups is None and split.bias is None:
        return split
    view = copy.copy(split)  # shallow: images and labels are shared, not copied
    view.groups, view.bias = None, None
    return view


def engine_view(bundle: DatasetBundle, protocol: AttributeProtocol) -> DatasetBundle:
    """What the engine evaluates on: val groups only when the protocol keeps them."""
    if protocol.val or "val" not in bundle.splits:
        return bundle
    splits = {**bundle.splits, "val": without_groups(bundle.splits["val"])}
    return dataclasses.replace(bundle, splits=splits)


def method_view(bundle: DatasetBundle, protocol: AttributeProtocol) -> DatasetBundle:
    """What the method is given: group labels of training data (every split but val and test, and
    auxiliary sets) only when ``protocol.train``; of val only when it also keeps val groups; never
    of test."""
    splits = {name: split if protocol.gives(name) else without_groups(split) for name, split in bundle.splits.items()}
    aux = {name: split if protocol.train else without_groups(split) for name, split in bundle.aux.items()}
    return dataclasses.replace(bundle, splits=splits, aux=aux)
