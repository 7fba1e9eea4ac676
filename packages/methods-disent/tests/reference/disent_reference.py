"""A compact port of DisEnt's released training step, to run beside ``robust_disent.disent.DisEnt``.

Ported from kakaoenterprise/Learning-Debiased-Disentangled (HEAD 7626f36): ``learner.py``
(``Learner.train_ours``, the loop body, and ``concat_dummy``), ``util.py`` (``EMA``),
``module/mlp.py`` (``MLP_DISENTANGLE``) and ``module/util.py`` (``resnet_DISENTANGLE``).
``module/loss.py`` is LfF's ``GeneralizedCELoss`` verbatim (see ``lff_reference``). Kept: the
arithmetic, in the original order. Left out: logging, checkpoints, evaluation, the
``--use_resnet20`` path, and the hard-coded ``.cuda()`` of the EMA (here on the batch's device).
One change, where the reference draws from NumPy's global generator: the swap permutation is an
argument of :meth:`DisEntReference.step`, so that a test can hand it the permutation our run drew.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

from .lff_reference import GeneralizedCELoss


class EMA:
    """util.py (DisEnt's copy of LfF's, with the class maximum by ``torch.where``)."""

    def __init__(self, label: Tensor, num_classes: int, alpha: float = 0.9) -> None:
        self.label = label
        self.alpha = alpha
        self.parameter = torch.zeros(label.size(0))
        self.updated = torch.zeros(label.size(0))
        self.num_classes = num_classes

    def update(self, data: Tensor, index: Tensor) -> None:
        self.parameter = self.parameter.to(data.device)
        self.updated = self.updated.to(data.device)
        index = index.to(data.device)
        self.parameter[index] = self.alpha * self.parameter[index] + (1 - self.alpha * self.updated[index]) * data
        self.updated[index] = 1

    def max_loss(self, label: int) -> Tensor:
        label_index = torch.where(self.label == label)[0]
        return self.parameter[label_index].max()


class MLPDisentangle(nn.Module):
    """module/mlp.py ``MLP_DISENTANGLE``, input size and widths as arguments (DisEnt's: 3*28*28 -> 100, 100, 16)."""

    def __init__(self, num_classes: int, in_features: int = 3 * 28 * 28, widths: tuple[int, ...] = (100, 100, 16)):
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        self.feature = nn.Sequential(*layers)
        self.fc = nn.Linear(2 * in_features, num_classes)

    def extract(self, x: Tensor) -> Tensor:
        x = x.view(x.size(0), -1) / 255
        return self.feature(x)


def resnet_disentangle(num_classes: int) -> nn.Module:
    """module/util.py ``resnet_DISENTANGLE``: torchvision ResNet-18 from scratch, ``fc`` 1024 wide."""
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(1024, num_classes)
    return model


def concat_dummy(z: list[Tensor]):
    """learner.py: record the pooled features, pad them with zeros so that the 1024-wide fc runs."""

    def hook(model: nn.Module, input: tuple[Tensor, ...], output: Tensor) -> Tensor:
        z.append(output.squeeze())
        return torch.cat((output, torch.zeros_like(output)), dim=1)

    return hook


class DisEntReference:
    """``Learner.train_ours``: ``model_l`` = (E_i, C_i), ``model_b`` = (E_b, C_b), one Adam each."""

    def __init__(
        self,
        model_l: nn.Module,
        model_b: nn.Module,
        train_target_attr: Tensor,
        num_classes: int,
        *,
        lr: float,
        lambda_dis_align: float,
        lambda_swap_align: float,
        lambda_swap: float,
        curr_step: int,
        use_lr_decay: bool,
        lr_decay_step: int,
        lr_gamma: float,
        weight_decay: float = 0.0,
        ema_alpha: float = 0.7,
        q: float = 0.7,
    ) -> None:
        self.model_l, self.model_b, self.num_classes = model_l, model_b, num_classes
        self.lambda_dis_align = lambda_dis_align
        self.lambda_swap_align = lambda_swap_align
        self.lambda_swap = lambda_swap
        self.curr_step, self.use_lr_decay = curr_step, use_lr_decay
        self.optimizer_l = torch.optim.Adam(model_l.parameters(), lr=lr, weight_decay=weight_decay)
        self.optimizer_b = torch.optim.Adam(model_b.parameters(), lr=lr, weight_decay=weight_decay)
        if use_lr_decay:
            step_lr = torch.optim.lr_scheduler.StepLR
            self.scheduler_b = step_lr(self.optimizer_b, step_size=lr_decay_step, gamma=lr_gamma)
            self.scheduler_l = step_lr(self.optimizer_l, step_size=lr_decay_step, gamma=lr_gamma)
        self.criterion = nn.CrossEntropyLoss(reduction="none")
        self.bias_criterion = GeneralizedCELoss(q=q)  # train_ours: GeneralizedCELoss(q=0.7), --q ignored
        self.sample_loss_ema_b = EMA(train_target_attr.long(), num_classes=num_classes, alpha=ema_alpha)
        self.sample_loss_ema_d = EMA(train_target_attr.long(), num_classes=num_classes, alpha=ema_alpha)

    def extract(self, data: Tensor) -> tuple[Tensor, Tensor]:
        """z_l, z_b: ``extract`` of the MLP, or the forward hook on ResNet's ``avgpool``."""
        if isinstance(self.model_l, MLPDisentangle):
            return self.model_l.extract(data), self.model_b.extract(data)
        z_b: list[Tensor] = []
        hook_fn = self.model_b.avgpool.register_forward_hook(concat_dummy(z_b))
        _ = self.model_b(data)
        hook_fn.remove()
        z_l: list[Tensor] = []
        hook_fn = self.model_l.avgpool.register_forward_hook(concat_dummy(z_l))
        _ = self.model_l(data)
        hook_fn.remove()
        return z_l[0], z_b[0]

    def step(self, step: int, index: Tensor, data: Tensor, label: Tensor, permutation: Tensor) -> Tensor:
        """One iteration of the loop (``permutation`` replaces ``np.random.permutation``); returns the loss."""
        z_l, z_b = self.extract(data)
        z_conflict = torch.cat((z_l, z_b.detach()), dim=1)
        z_align = torch.cat((z_l.detach(), z_b), dim=1)
        pred_conflict = self.model_l.fc(z_conflict)
        pred_align = self.model_b.fc(z_align)

        loss_dis_conflict = self.criterion(pred_conflict, label).detach()
        loss_dis_align = self.criterion(pred_align, label).detach()
        self.sample_loss_ema_d.update(loss_dis_conflict, index)
        self.sample_loss_ema_b.update(loss_dis_align, index)
        loss_dis_conflict = self.sample_loss_ema_d.parameter[index].clone().detach()
        loss_dis_align = self.sample_loss_ema_b.parameter[index].clone().detach()
        for c in range(self.num_classes):
            class_index = torch.where(label == c)[0]
            loss_dis_conflict[class_index] /= self.sample_loss_ema_d.max_loss(c)
            loss_dis_align[class_index] /= self.sample_loss_ema_b.max_loss(c)

        loss_weight = loss_dis_align / (loss_dis_align + loss_dis_conflict + 1e-8)  # Eq. 1
        loss_dis_conflict = self.criterion(pred_conflict, label) * loss_weight  # Eq. 2 W(z) CE(C_i(z), y)
        loss_dis_align = self.bias_criterion(pred_align, label)  # Eq. 2 GCE(C_b(z), y)

        if step > self.curr_step:
            z_b_swap = z_b[permutation]
            label_swap = label[permutation]
            z_mix_conflict = torch.cat((z_l, z_b_swap.detach()), dim=1)
            z_mix_align = torch.cat((z_l.detach(), z_b_swap), dim=1)
            pred_mix_conflict = self.model_l.fc(z_mix_conflict)
            pred_mix_align = self.model_b.fc(z_mix_align)
            loss_swap_conflict = self.criterion(pred_mix_conflict, label) * loss_weight  # Eq. 3
            loss_swap_align = self.bias_criterion(pred_mix_align, label_swap)  # Eq. 3
            lambda_swap = self.lambda_swap
        else:
            loss_swap_conflict = torch.tensor([0]).float()
            loss_swap_align = torch.tensor([0]).float()
            lambda_swap = 0

        loss_dis = loss_dis_conflict.mean() + self.lambda_dis_align * loss_dis_align.mean()  # Eq. 2
        loss_swap = loss_swap_conflict.mean() + self.lambda_swap_align * loss_swap_align.mean()  # Eq. 3
        loss = loss_dis + lambda_swap * loss_swap  # Eq. 4

        self.optimizer_l.zero_grad()
        self.optimizer_b.zero_grad()
        loss.backward()
        self.optimizer_l.step()
        self.optimizer_b.step()
        if step >= self.curr_step and self.use_lr_decay:
            self.scheduler_b.step()
            self.scheduler_l.step()
        return loss.detach()
