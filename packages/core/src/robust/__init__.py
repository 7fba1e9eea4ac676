"""robust: train image classifiers that do not lean on spurious correlations.

This package must stay cheap to import (no torch): plugins import ``hookimpl`` from here.
"""

from robust.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
