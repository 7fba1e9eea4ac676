"""Seeds: one run seed, and derived seeds for each random stream so that streams are independent
and a resumed run draws the same numbers as an uninterrupted one."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def derive_seed(seed: int, *names: object) -> int:
    """A stable 63-bit seed for a named stream (``derive_seed(0, "order", 3)``)."""
    digest = hashlib.sha256(":".join(str(n) for n in (seed, *names)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally make torch use deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def generator(seed: int, device: torch.device | str = "cpu", *names: object) -> torch.Generator:
    """A torch generator on ``device`` seeded for the named stream."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *names))
    return gen
