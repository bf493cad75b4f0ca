"""A quiet console: what libraries print, turned into one line of ours or silenced
with the reason written here.

- **OpenCV and FFmpeg** print their own lines (``[tcp @ 0x...] Connection ...
  failed``, ``[ WARN:0@0.4] global cap.cpp:212 ...``) before the one line in which
  jetsplit names the source that failed: :func:`quiet_native_logs` keeps OpenCV
  to errors and FFmpeg silent for the process, unless the user set them (exporting
  ``OPENCV_LOG_LEVEL=DEBUG`` / ``OPENCV_FFMPEG_LOGLEVEL=32`` brings them back for
  debugging a camera).
- **ONNX Runtime's quantizer** advises "Please consider to run pre-processing
  before quantization" on every model it quantizes (four times for a four-stage
  chain). That pre-processing (symbolic shape inference, graph optimisation)
  would change the graph jetsplit ships and measures; calibrate reports the
  accuracy shift of the graph it quantized instead. :func:`drop_records` drops it.
- **scikit-learn's ConvergenceWarning** (a learned gate's fit that ran out of
  iterations) arrives with a site-packages path and source line, and
  **onnxconverter-common** warns once per tiny weight that FP16 rounds ("the
  float32 number 3.09e-08 will be truncated to 1e-07"): :func:`one_line_for`
  turns each kind into one line of ours saying what it means.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["drop_records", "one_line_for", "quiet_native_logs"]

# OpenCV: errors only. FFmpeg: nothing (AV_LOG_QUIET): even its errors are raw lines
# ("[OPENCV:FFMPEG:16] Connection to tcp://... failed") ahead of our own line.
_NATIVE = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "-8"}


def quiet_native_logs() -> None:
    """OpenCV to errors, FFmpeg silent, in this process (and its children), where the
    user did not choose a level. Call before the first capture is opened."""
    for var, value in _NATIVE.items():
        os.environ.setdefault(var, value)


class _StartsWith(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def drop_records(prefix: str, logger: str = "") -> Iterator[None]:
    """Within the block, drop records of ``logger`` (default: the root logger, which
    libraries calling ``logging.warning`` use) whose message starts with ``prefix``."""
    target = logging.getLogger(logger)
    f = _StartsWith(prefix)
    target.addFilter(f)
    try:
        yield
    finally:
        target.removeFilter(f)


@contextmanager
def one_line_for(category: type[Warning], log: logging.Logger, line: str, starts: str = "") -> Iterator[None]:
    """Within the block, warnings of ``category`` (whose text starts with ``starts``)
    are caught; if any was, ``line`` is logged once as a warning of ours instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    others = [w for w in caught if not (issubclass(w.category, category) and str(w.message).startswith(starts))]
    if len(others) < len(caught):
        log.warning("%s", line)
    for w in others:  # not ours to judge: passed on as they came
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
