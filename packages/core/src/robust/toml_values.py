"""Option values as TOML literals, both ways: what ``--set KEY=VALUE`` reads and what a sweep writes.

Separate from :mod:`robust.config` so that commands that only format or parse values (``robust sweep``'s
run names, ``robust --help``) do not import pydantic.
"""

from __future__ import annotations

import tomllib
from typing import Any

from robust.errors import ConfigError


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``0.1``, ``true``, ``[1, 2]``) or else a plain string.

    Only one whole literal counts: ``1\nx = 2`` is the string it looks like, not 1 and a dropped key.
    """
    try:
        parsed = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):  # RecursionError: thousands of nested [[[
        return text
    return parsed["v"] if list(parsed) == ["v"] else text


def toml_literal(value: Any) -> str:
    """``value`` as the TOML literal :func:`parse_value` reads back exactly (floats by their shortest
    exact repr, never rounded: a sweep passes grid values to its runs this way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_literal(str(k))} = {toml_literal(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "isoformat"):  # TOML dates and times
        return value.isoformat()
    raise ConfigError(f"Cannot write {value!r} ({type(value).__name__}) as a TOML value.")


def to_toml(tree: dict[str, Any]) -> str:
    """A resolved config (what config.json holds) as a TOML file that ``--config`` reads back: the
    top-level keys, then a table per section. TOML has no null: an option that is not set (None) is
    a comment line, as is ``train.epochs`` when ``train.steps`` replaces it."""
    lines: list[str] = []
    tables = {k: v for k, v in tree.items() if isinstance(v, dict)}
    for key, value in tree.items():
        if key not in tables:
            lines.append(_toml_line(key, value))
    for name, table in tables.items():
        lines += ["", f"[{_toml_key(name)}]"]
        ignored = name == "train" and table.get("steps") is not None and "epochs" in table
        for key, value in table.items():
            line = _toml_line(key, value)
            if ignored and key == "epochs":
                line = f"# {line}  (ignored: steps is set)"
            lines.append(line)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else toml_literal(key)


def _toml_line(key: str, value: Any) -> str:
    if value is None:
        return f"# {_toml_key(key)} = (not set)"
    return f"{_toml_key(key)} = {toml_literal(_without_none(value))}"


def _without_none(value: Any) -> Any:
    """Inline tables without their unset (None) entries: TOML cannot write them."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def _toml_char(char: str) -> str:
    if char in ('"', "\\"):
        return "\\" + char
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        raise ConfigError(f"Cannot write a lone surrogate ({code:#x}) in a TOML string: it is not valid Unicode.")
    if (code < 0x20 and char != "\t") or code == 0x7F:
        return f"\\u{code:04X}"
    return char


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> (["a", "b"], 1)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"Cannot parse --set {item!r}: expected KEY=VALUE, for example `--set lr=0.01`, "
            "`--set train.batch_size=128` or `--set dataset.conflict_pct=2`."
        )
    return key.split("."), parse_value(value.strip())
