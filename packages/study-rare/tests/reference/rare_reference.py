"""A compact port of the rare-spurious-correlation study's released arithmetic, to run beside robust_rare.

Ported from yangarbiter/rare-spurious-correlation (HEAD af03694):

* ``spurious_ml/datasets/__init__.py``: ``add_spurious_correlation`` / ``add_colored_spurious_correlation``
  (one function here: they differ only in indexing a channel axis) and the planting of
  ``mnist_aug`` / ``fashion_aug`` / ``cifar10_aug``, on float NHWC images in [0, 1];
* ``notebooks/rare_spurious_correlation.ipynb`` (cells ``evaluate`` and the score loop): the
  spurious score, ``mean(p_c(x') - p_c(x) > threshold)`` over the test set;
* ``spurious_ml/influence_utils/influence.py`` (``s_test``, ``hvp``, ``calc_s_test_single``,
  ``first_order_group_influence``) and ``experiments/group_influence.py`` (``param - params[i]``):
  the group-influence edit with LiSSA, the training point of each step drawn as the reference
  draws it (a fresh shuffled ``DataLoader`` of batch size 1, first batch), the drawn indices recorded;
* ``spurious_ml/models/torch_base.py`` (``load``) and ``torch_model.py`` (``fit_dataset`` with
  ``with_scheduler=False``): incremental retraining's steps from a saved model and optimizer state.

Only the arithmetic is kept (no tqdm, autovar, file names or logging).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

# -- the patterns and the planted dataset ---------------------------------------------------------


def add_spurious_correlation(X: np.ndarray, version: str, seed: int) -> np.ndarray:
    """The pattern on every image of ``X`` (float NHWC in [0, 1]); in place for the set patterns."""
    if version == "v1":
        X[:, 0, 0, :] = 1
    elif version == "v3":
        X[:, :3, :3, :] = 1
    elif version == "v8":
        X[:, :5, :5, :] = 1
    elif version in ("v18", "v19", "v20"):
        amplitude = {"v18": 0.25, "v19": 0.5, "v20": 1.0}[version]
        noise = np.random.RandomState(seed).rand(*X.shape[1:])
        X = np.clip(X + amplitude * noise.reshape(1, *X.shape[1:]), 0, 1)
    elif version == "v30":
        X[:, 3:25, 13:16, :] = 1
    else:
        raise ValueError(f"version: {version} not supported")
    return X


def planted_dataset(
    x_train: np.ndarray, y_train: np.ndarray, version: str, sp_counts: int, cls_no: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(x_train with the pattern, spurious_ind)``: the reference's ``{dataset}{version}-{n}-{cls}-{seed}``."""
    x_train = x_train.copy()
    random_state = np.random.RandomState(seed)
    spurious_ind = random_state.choice(np.where(y_train == cls_no)[0], size=sp_counts, replace=False)
    x_train[spurious_ind] = add_spurious_correlation(x_train[spurious_ind], version, seed)
    return x_train, spurious_ind


# -- the spurious score ---------------------------------------------------------------------------


def spurious_score(
    predict: Callable[[np.ndarray], np.ndarray],
    tstX: np.ndarray,
    version: str,
    seed: int,
    tar_cls: int,
    threshold: float = 1e-1,
    tsty: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """``(score, per-image rise of p_tar_cls)`` of a model whose logits ``predict`` gives on NHWC floats;
    with ``tsty``, over the test images of the other classes only (``ind = (tsty != tar_cls)``, the
    CIFAR-10 cell)."""

    def softmax(z: np.ndarray) -> np.ndarray:  # scipy.special.softmax(axis=1)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    tst_preds = softmax(predict(tstX))
    modified_tstX = add_spurious_correlation(np.copy(tstX), version, seed)
    mod_tst_preds = softmax(predict(modified_tstX))
    if tsty is not None:
        ind = tsty != tar_cls
        mod_tst_preds, tst_preds = mod_tst_preds[ind], tst_preds[ind]
    rise = mod_tst_preds[:, tar_cls] - tst_preds[:, tar_cls]
    return float((rise > threshold).mean()), rise


# -- group influence ------------------------------------------------------------------------------


def _grad_z(model: nn.Module, z: Tensor, y: Tensor) -> list[Tensor]:
    loss = nn.CrossEntropyLoss(reduction="mean")(model(z), y)
    params = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, create_graph=True))


def _hvp(y: Tensor, w: list[Tensor], v: list[Tensor]) -> list[Tensor]:
    first_grads = torch.autograd.grad(y, w, retain_graph=True, create_graph=True)
    elemwise_products = 0
    for grad_elem, v_elem in zip(first_grads, v, strict=True):
        elemwise_products += torch.sum(grad_elem * v_elem)
    return list(torch.autograd.grad(elemwise_products, w, create_graph=True))


def _s_test(z, yi, model, Xt, yt, damp, scale, recursion_depth, drawn: list[int], released_graph: bool) -> list[Tensor]:
    v = _grad_z(model, z, yi)  # create_graph=True: the later products also differentiate through v
    if not released_graph:  # the textbook LiSSA: v a constant
        v = [t.detach() for t in v]
    h_estimate = [vv.detach() for vv in v.copy()]
    index = torch.arange(len(Xt))
    trn_loader = DataLoader(TensorDataset(Xt, yt, index), batch_size=1, shuffle=True)
    for _ in range(recursion_depth):
        for x, y, i in trn_loader:  # one random training point per step
            drawn.append(int(i))
            loss = nn.CrossEntropyLoss(reduction="mean")(model(x), y)
            params = [p for p in model.parameters() if p.requires_grad]
            hv = [h.detach() for h in _hvp(loss, params, h_estimate)]
            h_estimate = [_v + (1 - damp) * _h_e - _hv / scale for _v, _h_e, _hv in zip(v, h_estimate, hv, strict=True)]
            break
    return h_estimate


def first_order_group_influence(
    model: nn.Module,
    Z: Tensor,
    y: Tensor,
    Xt: Tensor,
    yt: Tensor,
    damp: float,
    scale: float,
    recursion_depth: int,
    r: int,
    released_graph: bool = True,
) -> tuple[list[Tensor], list[int]]:
    """``(params, drawn)``: the reference's ``-1/(1-p)/n · Σ_z s_test(z)`` (no final division by
    ``scale``) and the training indices its LiSSA steps drew, in order. ``released_graph=False``
    detaches ``v`` (the one change from the released code, to compare the textbook products)."""
    p = len(Z) / len(Xt)
    drawn: list[int] = []
    hessian_inv_hpv = None
    for k in range(len(Z)):
        z, yi = Z[k : k + 1], y[k : k + 1]
        estimates = [
            _s_test(z, yi, model, Xt, yt, damp, scale, recursion_depth, drawn, released_graph) for _ in range(r)
        ]
        s_test_vec = estimates[0]
        for i in range(1, r):
            s_test_vec = [a + b for a, b in zip(s_test_vec, estimates[i], strict=True)]
        temp = [t / r for t in s_test_vec]
        hessian_inv_hpv = (
            temp if hessian_inv_hpv is None else [t + v for t, v in zip(hessian_inv_hpv, temp, strict=True)]
        )
    return [-1 / (1 - p) / len(Xt) * h for h in hessian_inv_hpv], drawn


def group_influence_edit(model: nn.Module, params: list[Tensor]) -> None:
    """experiments/group_influence.py: ``param.copy_(param - params[i])``, in place."""
    with torch.no_grad():
        i = 0
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(param - params[i])
                i += 1


# -- incremental retraining -----------------------------------------------------------------------


def continue_training(
    model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict, batches: list[tuple[Tensor, Tensor]]
) -> None:
    """``load`` (model and optimizer state) then ``fit_dataset`` without a scheduler, on ``batches``."""
    model.load_state_dict(saved["model_state_dict"])
    optimizer.load_state_dict(saved["optimizer_state_dict"])
    base_loss_fn = nn.CrossEntropyLoss(reduction="none")
    for x, y in batches:
        model.train()
        optimizer.zero_grad()
        loss = base_loss_fn(model(x), y).mean()
        loss.backward()
        optimizer.step()
