"""The exception tree callers catch by type.

Every ``JetsplitError`` is a user-facing problem (bad input, bad configuration, a
missing file): the CLI prints its message as one line and exits non-zero. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "DataError",
    "EngineError",
    "JetsplitError",
    "ProtocolError",
    "SourceError",
]


class JetsplitError(Exception):
    """Base of every error that is the user's input, not a bug in jetsplit."""


class ConfigError(JetsplitError):
    """A configuration file, flag or environment variable is invalid."""


class BundleError(JetsplitError):
    """A bundle is missing, malformed, or does not match its files."""


class EngineError(JetsplitError):
    """An engine cannot be opened, or was fed tensors it does not accept."""


class ProtocolError(JetsplitError):
    """A wire message is malformed, too large, or of another protocol version."""


class SourceError(JetsplitError):
    """A camera, video or image source cannot be opened or read."""


class DataError(JetsplitError):
    """A dataset specification is unknown, or the data it names is unusable."""
