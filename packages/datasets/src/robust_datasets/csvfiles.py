"""Reading the metadata CSV files datasets ship (Waterbirds, CelebA's Kaggle variant, ISIC, ...)."""

from __future__ import annotations

import csv
from pathlib import Path

from robust.api import DataError


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header (stripped) and non-empty rows of a CSV file; an unreadable file is a DataError."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            rows = [row for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {str(path)!r} ({exc}); it should be a UTF-8 CSV file.") from None
    return header, rows
