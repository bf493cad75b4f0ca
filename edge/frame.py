"""What every frame source is: :class:`Frame` records from a :class:`Source`.

The sources themselves are in :mod:`jetsplit.edge.files` (video files and image
folders) and :mod:`jetsplit.edge.sources` (live captures, and ``open_source``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from jetsplit.errors import SourceError

__all__ = ["Capture", "Frame", "FrameTimeout", "Source"]


class FrameTimeout(SourceError):
    """No frame within the ``read`` timeout (the source is still open: try again)."""


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``index`` counts frames in capture order (gaps are frames a live source
    dropped); ``truth`` is the class name when the source is labelled.
    """

    index: int
    image: np.ndarray
    t_capture: float
    truth: str | None = None
    source_id: str = ""


class Capture(Protocol):
    """What we use of ``cv2.VideoCapture`` (tests inject fakes)."""

    def read(self) -> tuple[bool, Any]: ...
    def release(self) -> None: ...
    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)


class Source(ABC):
    """A stream of frames. ``read()`` returns the next frame or ``None`` at the
    end; iterate it, and close it (or use ``with``)."""

    live: bool = False

    def __init__(self, uri: str, source_id: str | None = None) -> None:
        self.uri = uri
        self.source_id = source_id or uri
        self.labels: tuple[str, ...] | None = None  # class names of a labelled source
        self.skipped = 0
        self._index = 0
        self._closed = False

    @property
    def dropped(self) -> int:
        """Frames captured but never delivered (live and realtime sources)."""
        return 0

    @abstractmethod
    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, ``None`` at the end of the stream."""

    def close(self) -> None:
        self._closed = True

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def __enter__(self) -> Source:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _frame(self, image: np.ndarray, truth: str | None = None) -> Frame:
        frame = Frame(self._index, image, time.monotonic(), truth, self.source_id)
        self._index += 1
        return frame


