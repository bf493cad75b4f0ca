"""Built-in demo assets: the zoo trained on MNIST and one bundle per mode.

Wherever a command takes a bundle directory it also takes ``demo:little-big``,
``demo:ensemble`` or ``demo:split``; :func:`resolve_bundle_path` maps those names
to the directories shipped inside the package.
"""

from __future__ import annotations

from pathlib import Path

from jetsplit.errors import BundleError

__all__ = ["BUNDLES_DIR", "DEMO_BUNDLES", "ZOO_DIR", "resolve_bundle_path"]

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"
DEMO_BUNDLES = ("little-big", "ensemble", "split")


def resolve_bundle_path(spec: str | Path) -> Path:
    """A bundle directory from a path or a ``demo:NAME`` spec."""
    text = str(spec)
    if text.startswith("demo:"):
        name = text[len("demo:") :]
        if name not in DEMO_BUNDLES:
            raise BundleError(f"demo bundle {name!r}: expected one of {', '.join(DEMO_BUNDLES)}")
        return BUNDLES_DIR / name
    return Path(text)
