"""CLP (Zhou, Ye, Xie, Zhang, Information Sciences): Mitigating Spurious Correlations with Causal
Logit Perturbation. Reference: xiaolingzhou98/CLP (``CLP_train.py``; it does not run as released,
see the README's list of decisions).

The classifier ``f_θ`` trains on perturbed logits ``z + δ``, where ``δ = P_φ(c)`` comes from a
perturbation network fed with ten training characteristics ``c`` of each sample
(:mod:`robust_clp.characteristics`, :mod:`robust_clp.perturbation`). ``φ`` is learned online on a
small clean meta set augmented with counterfactual and factual images
(:mod:`robust_clp.augmentation`), Meta-Weight-Net style. One training step:

1. virtual step (Eq. 8): ``θ'(φ) = θ − η ∇_θ [mean CE(z_θ + P_φ(c), y) + λ R_sal(train)]``, a plain
   SGD step with the classifier's current learning rate η, kept differentiable in φ (``c`` held
   fixed, or, with ``differentiable_characteristics``, differentiated as a function of θ as the
   released code);
2. meta step (Eq. 9): ``L_meta(θ'(φ))`` on one augmented meta batch (CE on originals and F images,
   ``−log(1 − p_y)`` on CF images, + λ R_sal(meta)); one Adam step on φ;
3. real step (Eq. 10): ``θ ← SGD step on mean CE(z_θ + P_φ_new(c), y) + λ R_sal(train)``.

``R_sal`` is the squared input gradient of the CE per background pixel (:mod:`robust_counterfactual.saliency`,
``per_background_pixel``): the gradient of the batch's SUMMED CE with respect to the inputs (so each
image's own CE gradient, whatever the batch size; a mean would divide R_sal by B²), squared and
summed over channels, averaged over the background pixels of each image, then over the images that
have a foreground; the double backward starts from that scalar. Evaluation uses the plain
classifier (no perturbation).

The masks it needs are refused missing (:func:`robust_counterfactual.fidelity.require_foreground`): the meta set's
for the CF/F images and R_sal(meta), the training set's for R_sal(train), unless ``allow_no_masks``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.autograd.forward_ad as fwAD
from robust_counterfactual.counterfactual import batch_foreground, counterfactual_batch_losses
from robust_counterfactual.fidelity import require_foreground, split_has_foreground
from robust_counterfactual.infill import has_foreground
from robust_counterfactual.saliency import input_gradient, outside_mask_penalty
from torch import Tensor
from torch.func import functional_call

from robust.api import ERM, Batch, ConfigError, MethodContext, Phase, Split
from robust_clp.augmentation import MetaBatches, MetadataAugmentation, in_memory
from robust_clp.characteristics import LOSS, MARGIN, ClassStatistics, class_prior
from robust_clp.config import CLPConfig
from robust_clp.perturbation import PerturbationNet
from robust_clp.presets import CLP_PRESETS, DATASET_PRESETS

Params = dict[str, Tensor]

MASKS_ADVICE = (
    "(CLP's authors predicted masks for every dataset, CIFAR included, with an image-matting network whose "
    "weights are not released: a mask provider is the closest stand-in; Waterbirds has the CUB segmentations, "
    "--set dataset.masks=true.)"
)


@dataclass
class AtTheta:
    """The training batch at θ, shared by the virtual and the real step (both start from θ): inputs,
    logits, labels, the ten characteristics (detached; ``live_features`` the same values with their
    graph to θ under ``differentiable_characteristics``), the trainable parameters, the saliency term
    and its gradient ``λ ∇_θ R_sal`` (None without the term)."""

    x: Tensor
    z: Tensor
    y: Tensor
    features: Tensor
    live_features: Tensor | None
    params: Params
    sal: Tensor | None
    sal_grads: Params | None


class CLP(ERM):
    """ERM on perturbed logits, with the perturbation network meta-learned on augmented meta data."""

    Config = CLPConfig
    config: CLPConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = CLP_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = DATASET_PRESETS

    def __init__(self, config: CLPConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        if ctx.precision.scaler is not None:
            raise ConfigError(
                "CLP differentiates through a virtual SGD step (second-order gradients), which fp16 loss scaling "
                "does not support: use --set train.amp=off (the default for clp) or train.amp=bf16."
            )
        meta = ctx.data.aux.get("meta")
        if meta is None:
            raise ConfigError(
                f"CLP learns its perturbation network on a small clean, class-balanced meta set, and dataset "
                f"{ctx.info.name!r} has none. Add one with --set dataset.meta_per_class=N (N clean training images "
                "per class move to the meta set)."
            )
        if config.differentiable_characteristics and config.meta_grad == "jvp":
            raise ConfigError(
                "differentiable_characteristics=true differentiates the virtual step through the ten characteristics, "
                "which depend on θ, so the virtual gradient is no longer J^T r with J independent of the perturbation "
                "network; meta_grad=jvp computes only that form. Add --set meta_grad=unrolled (the released code's "
                "way: backpropagation through the virtual step), or drop differentiable_characteristics."
            )
        meta = in_memory(meta)
        train = ctx.data.splits["train"]

        # The training characteristics' class statistics and the perturbation network, built once.
        self.statistics = ClassStatistics(class_prior(train.labels, ctx.num_classes)).to(ctx.device)
        self.perturbation = PerturbationNet(
            ctx.num_classes,
            config.perturb_mode,
            hidden_size=config.meta_hidden_size,
            num_layers=config.meta_num_layers,
        ).to(ctx.device)
        meta_optimizer = torch.optim.Adam(
            self.perturbation.parameters(), lr=config.meta_lr, weight_decay=config.meta_weight_decay
        )
        self.add_optimizer("meta", meta_optimizer)

        # The meta set's augmentation, where the masks come from, and the meta batches.
        self.augmentation = MetadataAugmentation(
            config.cf_infill,
            config.f_infill,
            ctx.info.mean,
            ctx.info.std,
            fgsm_eps=config.fgsm_eps,
            fgsm_alpha=config.fgsm_alpha,
            noise_std=config.noise_std,
        ).to(ctx.device)
        self.meta_masks, self.train_saliency = self._require_masks(meta, train)
        train_config = ctx.config.train
        self.meta_batches = MetaBatches(
            meta,
            ctx.info,
            ctx.device,
            batch_size=self.meta_images_drawn(config.meta_batch_size or train_config.batch_size),
            seed=ctx.config.seed,
            augmentation=(train_config.augment or ctx.info.train_augment) if config.meta_augment else "none",
            data_on_device=train_config.data_on_device,
        )

    # -- set-up ---------------------------------------------------------------------------

    def _require_masks(self, meta: Split, train: Split) -> tuple[bool, bool]:
        """Whether the meta batches and the training batches' saliency term have masks.

        The paper's CF and F images (Φ_cf, Φ_f) and R_sal(meta) need the meta set's masks; R_sal in
        the training loss (Eq. 10) needs the training set's (the released code computes masks for
        both loaders). Missing ones are refused, or under ``allow_no_masks`` recorded as an opt-out
        and those parts switched off.
        """
        c = self.config
        parts = [
            *(
                ["its counterfactual and factual meta images (cf_infill, f_infill)"]
                if self.augmentation.enabled
                else []
            ),
            *(["its saliency term (lambda_)"] if c.lambda_ > 0 else []),
        ]
        splits: dict[str, Split] = {}
        if c.lambda_ > 0:
            splits["training set"] = train
        if parts:
            splits["meta set"] = meta
        else:
            return False, False
        try:
            require_foreground(
                self.ctx, method="CLP", needs=" and ".join(parts), splits=splits, allow_no_masks=c.allow_no_masks
            )
        except ConfigError as error:
            raise ConfigError(f"{error} {MASKS_ADVICE}") from None
        return split_has_foreground(meta), c.lambda_ > 0 and split_has_foreground(train)

    def meta_images_drawn(self, meta_batch_size: int) -> int:
        """Meta images per meta batch. Under ``meta_batch_counts=images`` the meta step sees
        ``meta_batch_size`` images in all, CF and F images included (the release's meta loader draws
        batches of that size from the augmented meta set), so each meta image with its CF and F images
        takes three places; under ``originals`` every place is a meta image."""
        c = self.config
        if c.meta_batch_counts == "originals" or not (self.meta_masks and self.augmentation.enabled):
            return meta_batch_size
        per_image = 1 + (c.cf_infill != "none") + (c.f_infill != "none")
        return max(1, meta_batch_size // per_image)

    @classmethod
    def default_amp(cls, config: CLPConfig) -> str | None:
        """Second-order gradients (the virtual step, the saliency term) in full precision."""
        return "off"

    def phases(self) -> list[Phase]:
        return [Phase("train", drop_last=True)]  # the reference's loaders drop the last batch

    def on_epoch_end(self, epoch: int) -> None:
        self.statistics.roll()

    # -- the training step ----------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, Tensor | float]:
        c = self.config
        at = self.at_theta(batch)
        self.statistics.accumulate(at.y, at.features[:, LOSS], at.features[:, MARGIN])

        # (1) the virtual step θ'(φ) and (2) one Adam step of φ on the augmented meta batch.
        phi_grads, meta_logs = self.meta_gradient(at, self.meta_batches.next())
        self.step_perturbation(phi_grads)

        # (3) the real step with the updated φ.
        with torch.no_grad():
            delta = self.perturbation(at.features, at.y)
        ce = self.loss(at.z + delta, at.y).mean()
        objective = ce + linear_surrogate(at.params, at.sal_grads)  # its gradient: ∇ce + λ ∇R_sal
        self.optimize(objective, "model", clip_grad_norm=c.clip_grad_norm)
        sal = at.sal
        sal_value = sal.detach() if sal is not None else ce.new_zeros(())
        return {
            "loss": ce.detach() + c.lambda_ * sal_value,
            "ce": ce.detach(),
            "sal": sal_value,
            "delta": delta.abs().mean(),
            **meta_logs,
        }

    def at_theta(self, batch: Batch) -> AtTheta:
        """Everything the virtual and the real step read from the training batch at θ."""
        z, h, sal = self.forward_train(batch)
        differentiable = self.config.differentiable_characteristics
        live = self.statistics.characteristics(z, h, self.model.head.weight, batch.y, differentiable=differentiable)
        live = live.to(z.dtype)
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        sal_grads = self.saliency_gradient(sal, params)  # λ ∇_θ R_sal(train): φ does not enter it
        return AtTheta(batch.x, z, batch.y, live.detach(), live if differentiable else None, params, sal, sal_grads)

    def meta_gradient(self, at: AtTheta, meta_batch: Batch) -> tuple[list[Tensor | None], dict[str, Tensor]]:
        """∂L_meta(θ'(φ))/∂φ, as ``meta_grad`` says (the same value either way)."""
        if self.config.meta_grad == "unrolled":
            return self.unrolled_meta_gradient(at, meta_batch)
        return self.jvp_meta_gradient(at, meta_batch)

    def forward_train(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        """Logits, penultimate features and the saliency term of a training batch, from ONE forward
        at θ. The virtual and the real step share it: both start from θ (the virtual step is
        functional), so their logits, characteristics and saliency are the same tensors."""
        x, y = batch.x, batch.y
        captured: dict[str, Tensor] = {}

        def logits_fn(inputs: Tensor) -> Tensor:
            captured["h"] = self.model.features(inputs)
            return self.model.head(captured["h"])

        mask = batch_foreground(batch) if self.train_saliency else None
        fg = has_foreground(mask) if mask is not None else None
        if mask is None or fg is None or not bool(fg.any()):
            return logits_fn(x), captured["h"], None
        logits, grad = input_gradient(logits_fn, x, y, target="ce")
        return logits, captured["h"], outside_mask_penalty(grad[fg], mask[fg], "per_background_pixel")

    def saliency_gradient(self, sal: Tensor | None, params: Params) -> Params | None:
        """``λ ∇_θ R_sal(train)``, or None without the term. Computed once: the virtual step adds it
        to its gradient, the real step reuses it (:func:`linear_surrogate`)."""
        if sal is None:
            return None
        grads = torch.autograd.grad(
            self.config.lambda_ * sal, list(params.values()), retain_graph=True, allow_unused=True
        )
        return {n: g for n, g in zip(params, grads, strict=True) if g is not None}

    def virtual_lr(self) -> float:
        """η of the virtual step: the classifier's current learning rate (the reference's ``meta_lr``
        follows the same schedule)."""
        return self.optimizers["model"].param_groups[0]["lr"]

    def unrolled_meta_gradient(self, at: AtTheta, meta_batch: Batch) -> tuple[list[Tensor | None], dict[str, Tensor]]:
        """∂L_meta(θ'(φ))/∂φ by differentiating through the unrolled virtual step (Eq. 8-9 literally).

        ``θ' = θ − η (∇_θ mean ℓ(z + P_φ(c), y) + λ ∇_θ R_sal)``: a plain SGD step (no momentum, no
        weight decay), its gradient taken with ``create_graph=True`` so that θ' is a function of φ.
        With ``differentiable_characteristics`` ``c = c(θ)`` and ``∇_θ`` includes the path through it.
        """
        params = at.params
        features = at.live_features if at.live_features is not None else at.features
        delta = self.perturbation(features, at.y)
        loss = self.loss(at.z + delta, at.y).mean()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True, allow_unused=True)
        fast = virtual_params(params, dict(zip(params, grads, strict=True)), at.sal_grads, self.virtual_lr())
        meta_loss, logs = self.meta_loss(fast, meta_batch)
        return list(torch.autograd.grad(meta_loss, list(self.perturbation.parameters()), allow_unused=True)), logs

    def jvp_meta_gradient(self, at: AtTheta, meta_batch: Batch) -> tuple[list[Tensor | None], dict[str, Tensor]]:
        """The same ∂L_meta(θ'(φ))/∂φ as :meth:`unrolled_meta_gradient`, without second-order
        backpropagation through the classifier.

        With ``z'`` = z + δ and ``r(φ) = ∂ mean ℓ(z', y) / ∂z'``, the virtual gradient is ``Jᵀ r``
        where ``J = ∂z/∂θ`` does not depend on φ. So, with ``v = ∇_θ' L_meta``::

            ∂L_meta/∂φ = (∂θ'/∂φ)ᵀ v = −η (∂r/∂φ)ᵀ (J v)

        ``J v`` is one forward-mode product (a JVP) through the classifier at θ on the training
        batch; ``(∂r/∂φ)ᵀ u`` backpropagates through the loss and the perturbation network only.
        """
        params = at.params
        delta = self.perturbation(at.features, at.y)
        perturbed = at.z.detach() + delta
        (residual,) = torch.autograd.grad(self.loss(perturbed, at.y).mean(), perturbed, create_graph=True)
        grads = torch.autograd.grad(
            at.z, list(params.values()), grad_outputs=residual.detach(), retain_graph=True, allow_unused=True
        )
        lr = self.virtual_lr()
        with torch.no_grad():
            fast = virtual_params(params, dict(zip(params, grads, strict=True)), at.sal_grads, lr)
        fast = {n: t.requires_grad_(True) for n, t in fast.items()}
        meta_loss, logs = self.meta_loss(fast, meta_batch)
        v = torch.autograd.grad(meta_loss, list(fast.values()), allow_unused=True)
        tangent = {n: (-lr * g if g is not None else torch.zeros_like(fast[n])) for n, g in zip(fast, v, strict=True)}
        u = self.logits_jvp(at.x, params, tangent)
        return list(
            torch.autograd.grad((residual * u).sum(), list(self.perturbation.parameters()), allow_unused=True)
        ), logs

    def logits_jvp(self, x: Tensor, params: Params, tangent: Params) -> Tensor:
        """``(∂z/∂θ) t``: the change of the training batch's logits along ``t``, by forward-mode AD,
        in train mode with a copy of the buffers (as the forward it differentiates)."""
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        with warnings.catch_warnings(), fwAD.dual_level():
            # torch's own forward-mode decompositions call its deprecated torch.jit.script on first use
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            duals = {n: fwAD.make_dual(p.detach(), tangent[n]) for n, p in params.items()}
            logits = functional_call(self.model, {**buffers, **duals}, (x.detach(),))
            return fwAD.unpack_dual(logits).tangent

    def meta_loss(self, fast: Params, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """``L_meta`` at θ' on one meta batch, augmented with its CF and F images.

        CE on the originals and F images, ``−log(1 − p_y)`` on CF images (normalised by the enlarged
        batch, as CFGen), plus λ R_sal of the originals. The forward at θ' runs in train mode with a
        COPY of the classifier's buffers, so BatchNorm's running statistics are updated by the real
        step only (the reference's virtual model is a copy too).
        """
        c = self.config
        x, y = batch.x, batch.y
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}

        def logits_fn(inputs: Tensor) -> Tensor:
            return functional_call(self.model, {**buffers, **fast}, (inputs,))

        mask = batch_foreground(batch) if self.meta_masks else None
        fg = has_foreground(mask) if mask is not None else torch.zeros_like(y, dtype=torch.bool)
        x_cf = x_f = None
        if mask is not None and bool(fg.any()) and self.augmentation.enabled:
            x_cf, x_f = self.augmentation(x[fg], y[fg], mask[fg], self.model)
        extra = [t for t in (x_cf, x_f) if t is not None]
        sal = x.new_zeros(())
        if c.lambda_ > 0 and mask is not None and bool(fg.any()):
            logits, grad = input_gradient(logits_fn, x, y, target="ce")
            sal = outside_mask_penalty(grad[fg], mask[fg], "per_background_pixel")
            if extra:
                logits = torch.cat([logits, logits_fn(torch.cat(extra))])
        else:
            logits = logits_fn(torch.cat([x, *extra]))
        n, n_cf = len(y), 0 if x_cf is None else len(x_cf)
        labelled = torch.cat([logits[:n], logits[n + n_cf :]])
        labels = torch.cat([y, y[fg]]) if x_f is not None else y
        ce, cf = counterfactual_batch_losses(
            labelled, labels, logits[n : n + n_cf] if n_cf else None, y[fg] if n_cf else None
        )
        loss = ce + cf + c.lambda_ * sal
        logs = {"meta_loss": loss.detach(), "meta_ce": ce.detach(), "meta_cf": cf.detach(), "meta_sal": sal.detach()}
        return loss, logs

    def step_perturbation(self, grads: list[Tensor | None]) -> None:
        """One Adam step of φ on the meta-gradient (θ receives none)."""
        optimizer = self.optimizers["meta"]
        optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(self.perturbation.parameters(), grads, strict=True):
            param.grad = grad
        optimizer.step()

    def predict(self, x: Tensor) -> Tensor:
        """The plain classifier: no perturbation at evaluation."""
        return self.model(x)


def virtual_params(params: Params, grads: dict[str, Tensor | None], sal_grads: Params | None, lr: float) -> Params:
    """``θ − η (g + λ g_sal)`` per parameter (a parameter without a gradient stays as it is)."""
    fast = {}
    for name, param in params.items():
        step = grads.get(name)
        if sal_grads is not None and name in sal_grads:
            step = sal_grads[name] if step is None else step + sal_grads[name]
        fast[name] = param if step is None else param - lr * step
    return fast


def linear_surrogate(params: Params, grads: dict[str, Tensor] | None) -> Tensor:
    """A term whose value is 0 and whose gradient with respect to ``params`` is ``grads``:
    ``Σ ⟨g, θ⟩ − Σ ⟨g, θ⟩.detach()``. Lets the real step reuse the saliency gradient the virtual
    step computed instead of a second double-backward pass."""
    if not grads:
        return torch.zeros((), device=next(iter(params.values())).device)
    total = torch.stack([(grads[n] * params[n]).sum() for n in grads]).sum()
    return total - total.detach()
