"""A compact port of CLP's released training step, to run beside ``robust_clp.clp.CLP``.

Ported from xiaolingzhou98/CLP (HEAD "Update README.md"): ``CLP_train.py`` (``train_CLP``: the
virtual step on a copy of the model, the meta step, the real step; ``weight_feature``, the ten
characteristics; ``adjust_learning_rate``), ``model.py`` (``MLP``, the perturbation network) and
``resnet.py`` (``MetaModule.update_params``: ``θ − η g``, no momentum, no weight decay). Only the
arithmetic is kept.

The release does not run (robust-clp's README, "Decisions"). Where it crashes or computes nothing,
the port takes the repair robust-clp documents, each named here with its decision number:

* the perturbation head: ``output_layer_1``'s scalar added to every logit leaves softmax-CE
  unchanged; the port uses the unused C-output ``output_layer_2``, with tanh (4);
* the perturbation network and its Adam are built once, not inside the batch loop (5);
* ``weight_feature``: the per-sample class prior (the release passes the whole frequency vector),
  the cosine as a column, the class weights of the model being stepped (6);
* the previous epoch's class loss and margin: accumulated over the epoch from the unperturbed
  per-sample loss and margin, a class not seen keeping its value (the release never accumulates) (7);
* the saliency term: the gradient of the batch's summed CE with respect to the inputs, with
  ``create_graph`` (the release reads ``input_var.grad``, which is None), per pixel: squared,
  summed over channels, weighted by the background, divided by the background area; averaged over
  the images with a foreground (8);
* the meta batch is given (13); the release's augmented meta set returns the original images
  (its composition ``FG·m + BG·(1 − m)`` undoes both infills, decision 2), so its meta loss is
  ``mean CE + λ R_sal`` of the plain meta batch.

Kept from the release as it is: the characteristics of the virtual step are NOT detached, so the
virtual gradient also flows through them (robust-clp: ``differentiable_characteristics=true``);
the meta-gradient is backpropagated through the virtual step (``meta_grad=unrolled``); the real
step's characteristics are detached; the virtual model is a copy (its BatchNorm buffers are not
the model's); the real step recomputes the forward at θ.

Two switches port robust-clp's defaults instead, for the comparisons that cover them:
``detach_virtual=True`` (the characteristics are inputs in the virtual step too) and
``paper_meta_infills=(cf, f)``: the paper's counterfactual images (the foreground's rectangle
infilled, loss ``−log(1 − p_y)``) and factual images (the background infilled, CE with the label),
normalised by the enlarged batch (decision 3), with the inpainters of ``infilling/Baseline.py``
(CFGen's, which CLP copies): ``mean`` (``x·m``, 0 = the mean colour) and ``shuffle`` (every value
of the batch permuted). Randomness is torch's global generator, as in the original.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]


class ReleasedMLP(nn.Module):
    """model.py ``MLP`` with the C-output head: BatchNorm1d, ``num_layers`` Linear+ReLU, Linear, tanh."""

    def __init__(self, out_size: int, in_size: int = 10, hidden_size: int = 100, num_layers: int = 2) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_size)
        self.first_hidden_layer = nn.Sequential(nn.Linear(in_size, hidden_size), nn.ReLU())
        self.rest_hidden_layers = nn.Sequential(
            *[nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU()) for _ in range(num_layers - 1)]
        )
        self.output_layer_2 = nn.Linear(hidden_size, out_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.output_layer_2(self.rest_hidden_layers(self.first_hidden_layer(self.bn(x)))))


def weight_feature(
    features: Tensor,
    logits: Tensor,
    loss: Tensor,
    labels: Tensor,
    class_loss: Tensor,
    class_margin: Tensor,
    class_weights: Tensor,
    class_prior: Tensor,
) -> Tensor:
    """CLP_train.py ``weight_feature``: the ten characteristics, in its order of concatenation."""
    onehot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    last_loss = onehot.mm(class_loss.to(logits.dtype)[:, None])
    last_margin = onehot.mm(class_margin.to(logits.dtype)[:, None])
    p = F.softmax(logits, dim=1)
    p_label = (p * onehot).sum(dim=1)
    grad_proxy = torch.norm(1 - p, dim=1)
    others_max = p[onehot != 1].reshape(p.size(0), -1).max(dim=1).values
    margin = p_label - others_max
    relative_loss = loss[:, None] - last_loss
    relative_margin = margin[:, None] - last_margin
    label_weights = onehot.mm(class_weights)
    weight_norm = torch.norm(label_weights, dim=1)
    cosine = torch.cosine_similarity(features, label_weights, dim=1)
    neg_entropy = (p * F.log_softmax(logits, dim=1)).sum(dim=1)
    prior = onehot.mm(class_prior.to(logits.dtype)[:, None])  # repaired: the label's frequency
    columns = [loss[:, None], margin[:, None], grad_proxy[:, None], cosine[:, None], neg_entropy[:, None]]
    columns += [prior, last_loss, weight_norm[:, None], relative_loss, relative_margin]
    return torch.cat(columns, dim=1)


def saliency(logits_fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The logits of ``x`` and the saliency term (repaired, see the module docstring), image by image."""
    x = x.detach().clone().requires_grad_(True)
    logits = logits_fn(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x, create_graph=True)
    total, count = logits.new_zeros(()), 0
    for i in range(x.size(0)):
        if mask[i].sum() == 0:
            continue
        background = 1 - mask[i].to(grad.dtype)
        total = total + ((grad[i] ** 2).sum(dim=0, keepdim=True) * background).sum() / background.sum()
        count += 1
    return logits, total / max(count, 1)


def rectangle(mask: Tensor) -> Tensor:
    """utils.py ``make_masks_as_rectangular``: each mask replaced by its bounding rectangle."""
    out = torch.zeros_like(mask)
    for i in range(mask.size(0)):
        rows = torch.nonzero(mask[i].sum(dim=(0, 2)) > 0).flatten()
        cols = torch.nonzero(mask[i].sum(dim=(0, 1)) > 0).flatten()
        if len(rows):
            out[i, :, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = 1
    return out


def mean_inpaint(x: Tensor, mask: Tensor) -> Tensor:
    """Baseline.py ``MeanInpainter``: keep where mask = 1, 0 (the mean colour) elsewhere."""
    return x * mask


def shuffle_inpaint(x: Tensor, mask: Tensor) -> Tensor:
    """Baseline.py ``ShuffleInpainter``: fill with every value of the batch, permuted."""
    background = x.reshape(-1)[torch.randperm(x.nelement())].reshape(x.size())
    return x * mask + background * (1 - mask)


INPAINTERS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mean": mean_inpaint, "shuffle": shuffle_inpaint}


class ReleasedCLP:
    """``train_CLP``'s step on a classifier with an ``encoder`` and a linear ``head`` (the CIFAR
    ResNet's feature/logit pair), its SGD (``optimizer_a``) and the perturbation network's Adam."""

    def __init__(
        self,
        model: nn.Module,
        meta_net: ReleasedMLP,
        class_prior: Tensor,
        *,
        lr: float,
        momentum: float,
        nesterov: bool,
        weight_decay: float,
        meta_lr: float,
        meta_weight_decay: float,
        lambda_: float,
        detach_virtual: bool = False,
        paper_meta_infills: tuple[str, str] | None = None,
    ) -> None:
        self.model, self.meta_net = model, meta_net
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
        self.meta_optimizer = torch.optim.Adam(meta_net.parameters(), lr=meta_lr, weight_decay=meta_weight_decay)
        self.lr, self.lambda_ = lr, lambda_
        self.detach_virtual, self.paper_meta_infills = detach_virtual, paper_meta_infills
        num_classes = class_prior.shape[0]
        dtype = next(model.parameters()).dtype
        self.class_prior = class_prior.to(dtype)
        self.class_loss = torch.full((num_classes,), 5.0, dtype=dtype)  # loss_tensor_last
        self.class_margin = torch.ones(num_classes, dtype=dtype)  # margin_tensor_last
        self.loss_total = torch.zeros(num_classes, dtype=dtype)
        self.margin_total = torch.zeros(num_classes, dtype=dtype)
        self.class_total = torch.zeros(num_classes, dtype=dtype)

    def forward(self, params: Params, buffers: Params, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(feature, logits)`` as the release's ResNet32 returns them."""
        encoder = {k.removeprefix("encoder."): v for k, v in {**params, **buffers}.items() if k.startswith("encoder.")}
        feature = functional_call(self.model.encoder, encoder, (x,))
        return feature, F.linear(feature, params["head.weight"], params["head.bias"])

    def training_terms(self, params: Params, buffers: Params, x: Tensor, y: Tensor, mask: Tensor, detach: bool):
        """Logits, per-sample loss, characteristics and λ R_sal of the training batch at ``params``."""
        captured: dict[str, Tensor] = {}

        def logits_fn(inputs: Tensor) -> Tensor:
            captured["feature"], logits = self.forward(params, buffers, inputs)
            return logits

        if self.lambda_ > 0:
            logits, sal = saliency(logits_fn, x, y, mask)
        else:
            logits, sal = logits_fn(x), x.new_zeros(())
        loss = F.cross_entropy(logits, y, reduction="none")
        feature = weight_feature(
            captured["feature"],
            logits,
            loss,
            y,
            self.class_loss,
            self.class_margin,
            params["head.weight"],
            self.class_prior,
        )
        return logits, loss, feature.detach() if detach else feature, self.lambda_ * sal

    def step(self, x: Tensor, y: Tensor, mask: Tensor, meta_x: Tensor, meta_y: Tensor, meta_mask: Tensor) -> None:
        params = dict(self.model.named_parameters())
        # (1) the virtual step on a copy: θ'(φ) = θ − η ∇θ [CE(z + P_φ(c), y) + λ R_sal]
        copy_buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        logits, _, feature, reg = self.training_terms(params, copy_buffers, x, y, mask, self.detach_virtual)
        virtual_ce = F.cross_entropy(logits + self.meta_net(feature), y)
        grads = torch.autograd.grad(virtual_ce, list(params.values()), create_graph=True, retain_graph=True)
        # ∇θ λR_sal does not depend on φ: taken without a graph (the same θ', and BatchNorm has no
        # third derivative for create_graph through the double backward)
        reg_grads = [0.0] * len(grads)
        if self.lambda_ > 0:
            reg_grads = torch.autograd.grad(reg, list(params.values()), retain_graph=True)
        fast = {n: p - self.lr * (g + r) for (n, p), g, r in zip(params.items(), grads, reg_grads, strict=True)}
        # (2) the meta step: one Adam step of φ on L_meta(θ'(φ))
        meta_loss = self.meta_loss(fast, copy_buffers, meta_x, meta_y, meta_mask)
        self.meta_optimizer.zero_grad()
        meta_loss.backward()
        self.meta_optimizer.step()
        # (3) the real step at θ with the new φ (characteristics detached)
        buffers = dict(self.model.named_buffers())
        logits, _, feature, reg = self.training_terms(params, buffers, x, y, mask, True)
        real_loss = F.cross_entropy(logits + self.meta_net(feature), y) + reg
        self.optimizer.zero_grad()
        real_loss.backward()
        self.optimizer.step()
        # the class statistics of this epoch (repaired: accumulated)
        with torch.no_grad():
            self.loss_total.index_add_(0, y, feature[:, 0])
            self.margin_total.index_add_(0, y, feature[:, 1])
            self.class_total.index_add_(0, y, torch.ones_like(feature[:, 0]))

    def end_epoch(self) -> None:
        seen = self.class_total > 0
        self.class_loss = torch.where(seen, self.loss_total / self.class_total.clamp_min(1), self.class_loss)
        self.class_margin = torch.where(seen, self.margin_total / self.class_total.clamp_min(1), self.class_margin)
        self.loss_total, self.margin_total, self.class_total = (torch.zeros_like(self.class_loss) for _ in range(3))

    def meta_loss(self, fast: Params, buffers: Params, x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        def logits_fn(inputs: Tensor) -> Tensor:
            return self.forward(fast, buffers, inputs)[1]

        if self.lambda_ > 0:
            logits, sal = saliency(logits_fn, x, y, mask)
        else:
            logits, sal = logits_fn(x), x.new_zeros(())
        if self.paper_meta_infills is None:  # the release: the plain meta batch
            return F.cross_entropy(logits, y) + self.lambda_ * sal
        cf_name, f_name = self.paper_meta_infills
        fg = mask.flatten(1).sum(1) > 0
        x_fg, y_fg, m_fg = x[fg], y[fg], mask[fg].to(x.dtype)
        x_cf = INPAINTERS[cf_name](x_fg, 1 - rectangle(m_fg))  # the object's rectangle infilled
        x_f = INPAINTERS[f_name](x_fg, m_fg)  # the background infilled
        extra = logits_fn(torch.cat([x_cf, x_f]))
        n_cf = len(x_cf)
        total = len(y) + 2 * n_cf
        ce = (
            F.cross_entropy(logits, y, reduction="sum") + F.cross_entropy(extra[n_cf:], y_fg, reduction="sum")
        ) / total
        p_label = F.softmax(extra[:n_cf], dim=1).gather(1, y_fg[:, None]).squeeze(1)
        counterfactual = -torch.log(1 - p_label).sum() / total
        return ce + counterfactual + self.lambda_ * sal
