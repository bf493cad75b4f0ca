"""Strict readers for TOML tables: every error names the field, the expected and
the actual value, and a key the schema does not know is an error, not ignored (a
typo in a threshold's name must not silently leave the default in force)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jetsplit.errors import JetsplitError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

__all__ = ["TableReader", "dump_toml", "read_toml"]

T = TypeVar("T")
_MISSING = object()


def read_toml(path: Path, error: type[JetsplitError]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from None
    return data


def _type_name(value: object) -> str:
    return type(value).__name__


class TableReader:
    """Reads one TOML table; ``done()`` rejects keys nobody asked for."""

    def __init__(self, table: object, where: str, error: type[JetsplitError]) -> None:
        if not isinstance(table, dict):
            raise error(f"{where}: expected a table, got {_type_name(table)} {table!r}")
        self._table: dict[str, Any] = dict(table)
        self._seen: set[str] = set()
        self.where = where
        self.error = error

    def _get(self, key: str, default: object) -> object:
        self._seen.add(key)
        if key in self._table:
            return self._table[key]
        if default is _MISSING:
            raise self.error(f"{self.where}.{key}: required field is missing")
        return default

    def fail(self, key: str, expected: str, actual: object) -> JetsplitError:
        return self.error(f"{self.where}.{key}: expected {expected}, got {actual!r}")

    def text(self, key: str, default: object = _MISSING, choices: tuple[str, ...] | None = None) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        if choices is not None and value not in choices:
            raise self.fail(key, f"one of {', '.join(choices)}", value)
        return value

    def integer(self, key: str, default: object = _MISSING, minimum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "an integer", value)
        if minimum is not None and value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        return value

    def number(self, key: str, default: object = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, "a number", value)
        return float(value)

    def numbers(self, key: str, default: object = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise self.fail(key, "a list of numbers", value)
        return tuple(float(v) for v in value)

    def texts(self, key: str, default: object = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of strings", value)
        return tuple(value)

    def table(self, key: str, default: object = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, dict):
            raise self.fail(key, "a table", value)
        return value

    def tables(self, key: str) -> list[Any]:
        value = self._get(key, _MISSING)
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, "one or more [[" + key + "]] tables", value)
        return value

    def custom(self, key: str, convert: Callable[[object], T], default: object = _MISSING) -> T:
        return convert(self._get(key, default))

    def done(self) -> None:
        unknown = sorted(set(self._table) - self._seen)
        if unknown:
            raise self.error(f"{self.where}: unknown key(s) {', '.join(unknown)}")


def dump_toml(data: dict[str, Any]) -> str:
    """Serialise the subset of TOML that manifests use: scalars, lists of scalars,
    tables, and arrays of tables. Keys are written in the dict's order so a
    written manifest reads the way its author laid it out."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if _is_table(value):
            lines.append("")
            lines.append("[" + ".".join(_key(p) for p in [*path, key]) + "]")
            _dump_table(value, [*path, key], lines)
        elif _is_table_array(value):
            for item in value:
                lines.append("")
                lines.append("[[" + ".".join(_key(p) for p in [*path, key]) + "]]")
                _dump_table(item, [*path, key], lines)


def _is_table(value: object) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    bare = key and all(c.isalnum() or c in "-_" for c in key)
    return key if bare else _value(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
