"""Frame sources addressed by URI, as jetson-utils names them.

    =============================  ==============================================
    ``file://clip.mp4``            a video file (OpenCV's FFmpeg backend)
    ``file://frames/`` or a path   a directory of images, sorted; with one
                                   sub-folder per class, each frame's ``truth``
                                   is its folder's name
    ``file://digit.png``           one image
    ``v4l2:///dev/video0``         a V4L2 camera (USB), no GStreamer needed
    ``csi://0``                    a MIPI CSI camera through ``nvarguscamerasrc``
    ``rtsp://host/stream``         a network stream (GStreamer, hardware decode
                                   on Jetson; OpenCV's FFmpeg where no GStreamer)
    ``gst:PIPELINE`` or ``a ! b``  a raw GStreamer pipeline ending in ``appsink``
    =============================  ==============================================

    >>> with open_source("file://clip.avi") as src:                  # doctest: +SKIP
    ...     for frame in src:
    ...         frame.index, frame.image.shape, frame.truth

Frames are :class:`Frame` records: HxW or HxWxC uint8 images in OpenCV's BGR
order (what :mod:`jetsplit.preprocess` takes), ``t_capture`` on
``time.monotonic()`` (system-wide on Linux, so other processes on the board can
compare it), and ``index`` counting frames as they were captured.

**Live** sources (``v4l2``, ``csi``, ``rtsp``, ``gst``) read on a grabber thread
(:mod:`jetsplit.edge.grabber`) that keeps only the newest frame when the consumer
falls behind; dropped frames leave gaps in ``index`` and are counted in
``dropped``. **Files and directories** are read on demand, so every frame is
processed and nothing is dropped, unless ``realtime=True``: then they play at
``fps`` like a camera, through the same grabber, and drop like one.

Errors are :class:`~jetsplit.errors.SourceError` with one line naming the URI: a
missing file or device, a video OpenCV cannot decode, a GStreamer source on an
OpenCV built without GStreamer (PyPI's wheels; use JetPack's system OpenCV), a
camera that stops delivering (no frame for ``stall_timeout_s``). An image in a
directory that does not decode is **skipped and counted** (``skipped``,
``skipped_paths``) by default, because one corrupt file on a board's SD card must
not stop a pipeline; ``on_bad_image="raise"`` makes it an error instead, and a
directory in which no image decodes is an error either way.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import cv2
import numpy as np

from jetsplit.edge.grabber import Grabber, GrabberTimeout
from jetsplit.errors import SourceError

__all__ = [
    "IMAGE_SUFFIXES",
    "CaptureSource",
    "Frame",
    "FrameTimeout",
    "ImageFolderSource",
    "Source",
    "VideoFileSource",
    "csi_pipeline",
    "gstreamer_available",
    "open_source",
    "rtsp_pipeline",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"})
_APPSINK = "appsink drop=true max-buffers=1 sync=false"


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


class _Capture(Protocol):
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
        self._cap: _Capture | None = cap
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


class CaptureSource(Source):
    """A live capture (camera, network stream, GStreamer pipeline) read on a
    grabber thread that keeps the newest frame.

    ``read()`` raises :class:`SourceError` when the capture delivers nothing for
    ``stall_timeout_s`` (a camera unplugged, a stream that died), and returns
    ``None`` only after ``close()``.
    """

    live = True

    def __init__(self, uri: str, capture: _Capture, *, source_id: str | None = None, stall_timeout_s: float = 5.0,
                 hint: str = "") -> None:
        super().__init__(uri, source_id)
        if not capture.isOpened():
            raise SourceError(f"{uri}: cannot open the capture{': ' + hint if hint else ''}")
        self.stall_timeout_s = stall_timeout_s
        self._cap = capture
        self._last_ok = time.monotonic()
        self._grabber: Grabber[Frame] = Grabber(self._grab, name=uri)
        self._grabber.start()

    @property
    def dropped(self) -> int:
        return self._grabber.dropped

    def _grab(self) -> Frame | None:
        while not self._grabber.stop_event.is_set():
            ok, image = self._cap.read()
            now = time.monotonic()
            if ok and image is not None and image.size:
                self._last_ok = now
                return self._frame(image)
            if now - self._last_ok > self.stall_timeout_s:
                raise SourceError(f"{self.uri}: the camera stopped delivering frames ({self.stall_timeout_s:.1f} s without one)")
            # A failed read returns at once on some backends: back off briefly.
            self._grabber.stop_event.wait(0.01)
        return None

    def read(self, timeout: float | None = None) -> Frame | None:
        if self._closed:
            return None
        wait = self.stall_timeout_s if timeout is None else timeout
        try:
            return self._grabber.get(wait)
        except GrabberTimeout:
            raise FrameTimeout(f"{self.uri}: no frame within {wait:.3f} s (camera stalled?)") from None

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        # Releasing a capture while another thread is inside read() can crash
        # OpenCV: release only once the grabber has left it.
        if self._grabber.stop(timeout=2.0):
            self._cap.release()
        else:
            log.warning("%s: capture thread did not stop within 2 s; not releasing it", self.uri)


# -- GStreamer ------------------------------------------------------------------


def gstreamer_available(build_info: str | None = None) -> bool:
    """Whether this OpenCV was built with GStreamer (PyPI's wheels are not)."""
    info = cv2.getBuildInformation() if build_info is None else build_info
    for line in info.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "GStreamer":
            return value.strip().upper().startswith("YES")
    return False


def _need_gstreamer(uri: str, kind: str) -> None:
    if not gstreamer_available():
        raise SourceError(
            f"{uri}: {kind} sources need OpenCV with GStreamer, and this OpenCV {cv2.__version__} "
            f"({Path(cv2.__file__).parent}) has none (PyPI's opencv-python wheels never do); on Jetson use "
            "JetPack's system OpenCV: run with /usr/bin/python3 or a venv made with --system-site-packages, "
            "without opencv-python from PyPI"
        )


def _on_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


def _to_bgr(jetson: bool) -> str:
    # Jetson decoders and the camera deliver NVMM buffers: nvvidconv brings them
    # to system memory; videoconvert then makes the BGR that OpenCV expects.
    head = "nvvidconv ! video/x-raw, format=BGRx ! " if jetson else ""
    return f"{head}videoconvert ! video/x-raw, format=BGR ! {_APPSINK}"


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The ``nvarguscamerasrc`` pipeline for a MIPI CSI camera (Jetson only)."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1, format=NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
        f"videoconvert ! video/x-raw, format=BGR ! {_APPSINK}"
    )


def rtsp_pipeline(url: str, latency_ms: int = 200, jetson: bool | None = None) -> str:
    """A decoding pipeline for an RTSP stream (hardware decoders on Jetson)."""
    return f"rtspsrc location={url} latency={latency_ms} ! decodebin ! {_to_bgr(_on_jetson() if jetson is None else jetson)}"


# -- open_source ----------------------------------------------------------------


def _gst_capture(pipeline: str) -> _Capture:
    return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)


def open_source(
    uri: str,
    *,
    realtime: bool = False,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    stall_timeout_s: float = 5.0,
    on_bad_image: str = "skip",
    shuffle_seed: int | None = None,
    source_id: str | None = None,
) -> Source:
    """Open a source by URI (see the module docstring for the forms).

    ``fps`` paces ``realtime`` file sources (default: the video's rate, or 30)
    and requests a camera rate; ``width``/``height`` request a camera size.
    """
    if not uri:
        raise SourceError("source: expected a URI (file://, v4l2://, csi://, rtsp://, gst:), got an empty string")
    common: dict[str, Any] = {"source_id": source_id, "stall_timeout_s": stall_timeout_s}
    if uri.startswith("gst:") or " ! " in uri:
        pipeline = uri[4:].strip() if uri.startswith("gst:") else uri
        _need_gstreamer(uri, "GStreamer pipeline")
        if "appsink" not in pipeline:
            pipeline = f"{pipeline} ! {_APPSINK}"
        return CaptureSource(uri, _gst_capture(pipeline), hint=f"GStreamer could not start {pipeline!r}", **common)
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "file", uri
    scheme = scheme.lower()
    if scheme == "file":
        path = Path(rest).expanduser()
        if path.is_dir():
            return ImageFolderSource(uri, path, realtime=realtime, fps=fps, on_bad_image=on_bad_image,
                                     shuffle_seed=shuffle_seed, **common)
        if not path.exists():
            raise SourceError(f"{uri}: no such file or directory {str(path)!r}")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFolderSource(uri, path, realtime=realtime, fps=fps, on_bad_image=on_bad_image, **common)
        return VideoFileSource(uri, path, realtime=realtime, fps=fps, **common)
    if scheme == "v4l2":
        device = f"/dev/video{rest}" if rest.isdigit() else rest
        if not Path(device).exists():
            raise SourceError(f"{uri}: no such device {device!r} (is the camera plugged in? `v4l2-ctl --list-devices`)")
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height), (cv2.CAP_PROP_FPS, fps)):
            if value:
                cap.set(prop, float(value))
        # One buffer in the driver: the grabber, not V4L2, decides what is newest.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if not cap.isOpened():
            raise SourceError(f"{uri}: cannot open {device!r} (in use by another process, or no permission: group 'video'?)")
        return CaptureSource(uri, cap, **common)
    if scheme == "csi":
        if not rest.isdigit():
            raise SourceError(f"{uri}: expected csi://N with N the sensor id, got {rest!r}")
        _need_gstreamer(uri, "CSI camera")
        pipeline = csi_pipeline(int(rest), width or 1280, height or 720, int(fps or 30))
        hint = "is the sensor connected and nvargus-daemon running (`systemctl status nvargus-daemon`)?"
        return CaptureSource(uri, _gst_capture(pipeline), hint=hint, **common)
    if scheme in ("rtsp", "rtsps"):
        if gstreamer_available():
            return CaptureSource(uri, _gst_capture(rtsp_pipeline(uri)), hint="stream unreachable or codec unsupported", **common)
        # Without GStreamer, OpenCV's FFmpeg backend still reads RTSP (software
        # decoding): slower, but a stream the operator asked for beats an error.
        log.warning("%s: OpenCV has no GStreamer; decoding with FFmpeg on the CPU", uri)
        return CaptureSource(uri, cv2.VideoCapture(uri, cv2.CAP_FFMPEG), hint="stream unreachable or codec unsupported", **common)
    raise SourceError(f"{uri}: unknown source scheme {scheme!r} (expected file, v4l2, csi, rtsp, or gst:PIPELINE)")
