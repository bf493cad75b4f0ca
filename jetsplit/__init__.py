"""jetsplit: edge/cloud split inference for Jetson-class boards.

The core package holds what every side shares: engines, bundles, the chain of
stages, gates, preprocessing and datasets. The sides live in ``jetsplit.edge``,
``jetsplit.cloud``, ``jetsplit.protocol``, ``jetsplit.calibration`` and
``jetsplit.tools``; the core imports none of them.
"""

from __future__ import annotations

from jetsplit.errors import (
    BundleError,
    ConfigError,
    DataError,
    EngineError,
    JetsplitError,
    ProtocolError,
    SourceError,
)

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "ConfigError",
    "DataError",
    "EngineError",
    "JetsplitError",
    "ProtocolError",
    "SourceError",
    "__version__",
]
