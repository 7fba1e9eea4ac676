"""DisEnt's learning-rate schedule: step decay that starts counting when swapping starts.

The reference steps a ``StepLR(step_size=lr_decay_step, gamma=lr_gamma)`` after every
optimiser step with ``step >= curr_step``. So the step taken at (0-based) step ``s`` uses
``lr * gamma ** (max(0, s - curr_step) // lr_decay_step)``: with curr_step = decay = 10k, the
first decay applies from step 20k, then 30k and 40k.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def delayed_step_factor(step: int, curr_step: int, decay_step: int, gamma: float) -> float:
    """The LR multiplier in force at 0-based ``step``."""
    return gamma ** (max(0, step - curr_step) // decay_step)


def delayed_step_lr(optimizer: torch.optim.Optimizer, curr_step: int, decay_step: int, gamma: float) -> LambdaLR:
    """A scheduler to step once per training step (the engine does, with ``interval="step"``)."""
    return LambdaLR(optimizer, lambda step: delayed_step_factor(step, curr_step, decay_step, gamma))
