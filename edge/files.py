"""Finite sources: a video file, a folder of images (or one image).

Read on demand, every frame is delivered; with ``realtime=True`` they play at
``fps`` through a :class:`~jetsplit.edge.grabber.Grabber` and drop like a camera.
See :mod:`jetsplit.edge.sources` for the URIs that open them.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from jetsplit.edge.frame import Capture, Frame, FrameTimeout, Source
from jetsplit.edge.grabber import Grabber, GrabberTimeout
from jetsplit.errors import SourceError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderSource", "VideoFileSource"]

log = logging.getLogger("jetsplit.edge.sources")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"})


class _PlayedSource(Source):
    """A finite source read on demand, or played at ``fps`` through a grabber."""

    def __init__(self, uri: str, source_id: str | None, realtime: bool, fps: float, stall_timeout_s: float) -> None:
        super().__init__(uri, source_id)
        self.realtime = realtime
        self.fps = fps
        self.stall_timeout_s = stall_timeout_s
        self._grabber: Grabber[Frame] | None = None

    @abstractmethod
    def _next(self) -> Frame | None:
        """The next frame from the file(s), or None at the end."""

    @property
    def dropped(self) -> int:
        return self._grabber.dropped if self._grabber else 0

    def read(self, timeout: float | None = None) -> Frame | None:
        if self._closed:
            return None
        if not self.realtime:
            return self._next()
        if self._grabber is None:
            self._grabber = Grabber(self._paced(), name=self.uri).start()
        try:
            return self._grabber.get(self.stall_timeout_s if timeout is None else timeout)
        except GrabberTimeout:
            wait = self.stall_timeout_s if timeout is None else timeout
            raise FrameTimeout(f"{self.uri}: no frame within {wait:.3f} s") from None

    def _paced(self) -> Callable[[], Frame | None]:
        period = 1.0 / self.fps
        start = time.monotonic()
        count = 0

        def read() -> Frame | None:
            nonlocal count
            due = start + count * period
            delay = due - time.monotonic()
            # Waiting on the stop event, not sleeping, so close() is prompt.
            if delay > 0 and self._grabber is not None and self._grabber.stop_event.wait(delay):
                return None
            count += 1
            return self._next()

        return read

    def close(self) -> None:
        if self._grabber is not None:
            self._grabber.stop(timeout=2.0)
        super().close()


class VideoFileSource(_PlayedSource):
    """A video file through ``cv2.VideoCapture``."""

    def __init__(self, uri: str, path: Path, *, source_id: str | None = None, realtime: bool = False,
                 fps: float | None = None, stall_timeout_s: float = 5.0) -> None:
        if not path.is_file():
            raise SourceError(f"{uri}: no such file {str(path)!r}")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise SourceError(f"{uri}: OpenCV cannot open {str(path)!r} as a video (unknown container or codec)")
        file_fps = float(cap.get(cv2.CAP_PROP_FPS))
        super().__init__(uri, source_id, realtime, fps or (file_fps if file_fps > 0 else 30.0), stall_timeout_s)
        self._cap: Capture | None = cap
        self._read_any = False

    def _next(self) -> Frame | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if not ok or image is None:
            self._release()
            if not self._read_any:
                raise SourceError(f"{self.uri}: the video has no decodable frames")
            return None
        self._read_any = True
        return self._frame(image)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        super().close()
        if self._grabber is None or not self._grabber.alive:
            self._release()


class ImageFolderSource(_PlayedSource):
    """Images in a directory (or one image file), sorted by path. With no images at the top level and
    one sub-folder per class, each frame's ``truth`` is its sub-folder's name and
    ``labels`` the sorted sub-folder names. ``shuffle_seed`` plays them in a fixed
    random order instead (a class-sorted stream is a poor test of a controller)."""

    def __init__(self, uri: str, root: Path, *, source_id: str | None = None, realtime: bool = False,
                 fps: float | None = None, stall_timeout_s: float = 5.0, on_bad_image: str = "skip",
                 shuffle_seed: int | None = None) -> None:
        if on_bad_image not in ("skip", "raise"):
            raise SourceError(f"{uri}: on_bad_image: expected 'skip' or 'raise', got {on_bad_image!r}")
        super().__init__(uri, source_id, realtime, fps or 30.0, stall_timeout_s)
        self.on_bad_image = on_bad_image
        self.skipped_paths: list[Path] = []
        self.items = _list_images(uri, root)
        classes = sorted({t for _, t in self.items if t is not None})
        self.labels = tuple(classes) if classes else None
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(self.items))
            self.items = [self.items[int(i)] for i in order]
        self._pos = 0

    def __len__(self) -> int:
        return len(self.items)

    def _next(self) -> Frame | None:
        while self._pos < len(self.items):
            path, truth = self.items[self._pos]
            self._pos += 1
            # ANYCOLOR keeps gray images 2-D and colour BGR, always 8-bit.
            image = cv2.imread(str(path), cv2.IMREAD_ANYCOLOR)
            if image is not None and image.size:
                return self._frame(image, truth)
            if self.on_bad_image == "raise":
                raise SourceError(f"{self.uri}: cannot decode image {str(path)!r}")
            self.skipped += 1
            self.skipped_paths.append(path)
            log.warning("%s: skipped undecodable image %s (%d skipped so far)", self.uri, path, self.skipped)
        if self._index == 0 and self.skipped:
            raise SourceError(f"{self.uri}: none of the {self.skipped} images decodes")
        return None


def _list_images(uri: str, root: Path) -> list[tuple[Path, str | None]]:
    if root.is_file():
        return [(root, None)]
    if not root.is_dir():
        raise SourceError(f"{uri}: no such directory {str(root)!r}")

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    top = images(root)
    if top:
        return [(p, None) for p in top]
    items: list[tuple[Path, str | None]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        items.extend((p, sub.name) for p in images(sub))
    if not items:
        raise SourceError(f"{uri}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {str(root)!r} or its sub-folders")
    return items


