"""What every daemon's configuration shares: the precedence of its sources, and
logging set-up.

Precedence is file, then environment, then flags: each later source overrides
the keys it sets, and a flag left at ``None`` sets nothing.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from jetsplit.errors import ConfigError

__all__ = ["EnvTable", "layered", "parse_flag", "relative_to_file", "setup_logging", "split_list"]

#: environment variable -> (config key, converter from the variable's text)
EnvTable = Mapping[str, tuple[str, Callable[[str], Any]]]


def split_list(text: str) -> tuple[str, ...]:
    """A comma-separated list from an environment variable."""
    return tuple(x for x in text.split(",") if x)


def parse_flag(text: str) -> bool:
    """A boolean from an environment variable: 1/true/yes/on or 0/false/no/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


def layered(file_values: Mapping[str, Any], environ: Mapping[str, str], env: EnvTable,
            flags: Mapping[str, Any], tuple_keys: Iterable[str] = ()) -> dict[str, Any]:
    """The merged keyword arguments of a config struct. A variable that has the
    table's prefix (``JETSPLIT_EDGE_``) but is not in it is a typo, an error like a
    misspelt key in the file: silently ignoring it would run with the default."""
    _check_unknown(environ, env)
    values: dict[str, Any] = dict(file_values)
    for var, (key, conv) in env.items():
        if var in environ:
            try:
                values[key] = conv(environ[var])
            except ValueError:
                raise ConfigError(f"{var}: expected a value for {key}, got {environ[var]!r}") from None
    values.update({k: v for k, v in flags.items() if v is not None})
    for key in tuple_keys:
        if key in values:
            values[key] = tuple(values[key])
    return values


def _check_unknown(environ: Mapping[str, str], env: EnvTable) -> None:
    if not env:
        return
    common = os.path.commonprefix(list(env))
    prefix = common[:common.rfind("_") + 1]
    if not prefix:
        return
    for var in sorted(environ):
        if var.startswith(prefix) and var not in env:
            # Compare what follows the prefix: the shared prefix would make anything look close.
            close = difflib.get_close_matches(var[len(prefix):], [k[len(prefix):] for k in env], n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"known: {', '.join(sorted(env))}"
            raise ConfigError(f"{var}: unknown variable ({hint})")


def setup_logging(level: str) -> None:
    """Timestamped ``level logger message`` lines on stderr (journald keeps them)."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def relative_to_file(ref: str, config_file: Path) -> str:
    """A bundle named in a config file: ``demo:NAME`` and absolute paths as given,
    relative paths relative to the file (not to wherever the daemon starts)."""
    if ref.startswith("demo:") or Path(ref).is_absolute():
        return ref
    return str(config_file.parent / ref)
