"""Reading pickle-format dataset files without running the code a pickle can carry.

A pickle is a program: ``pickle.load`` calls whatever global the file names (``os.system``,
``builtins.eval``, ...), so a crafted "CIFAR batch" runs code under ``robust run`` and
``robust data verify``. The files we read (the CIFAR-10/100 python batches) only ever hold dicts,
lists, str, bytes, numbers and numpy arrays, so :class:`DatasetUnpickler` resolves exactly the
globals that numpy's array reconstruction needs and refuses every other one, naming the file.
Containers, strings and numbers need no global at all.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from robust.api import DataError

try:  # numpy >= 2 moved the reconstruction helpers to numpy._core; old pickles name numpy.core
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it to carry bytes (latin-1 only, nothing else)."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a bytes literal")
    return text.encode("latin1")


# (module, name) -> the object it stands for. ``numpy.core`` / ``numpy._core`` both appear: the
# original CIFAR files were written by Python 2 numpy, files re-saved today by numpy 2.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = scalar
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _frombuffer


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that a dataset file never needs."""


class DatasetUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, str, bytes, numbers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def load_pickle(path: Path, what: str, fix: str) -> Any:
    """The object pickled in ``path`` (latin-1 strings, as Python 2 files need); DataError naming it otherwise.

    ``what`` names the file's kind in messages ("CIFAR file"), ``fix`` says what to do.
    """
    try:
        with Path(path).open("rb") as f:
            return DatasetUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise DataError(
            f"Refused to read the {what} {str(path)!r}: the pickle asks to call {exc}, which a dataset file never "
            "contains (it holds only dicts, lists, strings, numbers and numpy arrays), so it may be crafted to run "
            f"code; nothing in it was executed. {fix}"
        ) from None
    except OSError as exc:
        raise DataError(f"Cannot read the {what} {str(path)!r} ({exc.strerror or exc}). {fix}") from None
    except Exception as exc:  # a corrupt pickle raises any of a dozen exception types
        raise DataError(
            f"Cannot read the {what} {str(path)!r}: it is not a valid pickle ({type(exc).__name__}: {exc}). {fix}"
        ) from None
