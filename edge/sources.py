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
    ``http://camera/video.mjpg``   an IP camera's HTTP stream (OpenCV's FFmpeg)
    ``gst:PIPELINE`` or ``a ! b``  a raw GStreamer pipeline ending in ``appsink``
    =============================  ==============================================

    >>> with open_source("file://clip.avi") as src:                  # doctest: +SKIP
    ...     for frame in src:
    ...         frame.index, frame.image.shape, frame.truth

Frames are :class:`Frame` records: HxW or HxWxC uint8 images in OpenCV's BGR
order (what :mod:`jetsplit.preprocess` takes), ``t_capture`` on
``time.monotonic()`` (system-wide on Linux, so other processes on the board can
compare it), and ``index`` counting frames as they were captured.

``open_source`` looks the scheme up in a table of openers (one function per
scheme, each knowing whether its sources are live); :func:`is_live` answers from
the same table before anything is opened. The GStreamer pipelines are in
:mod:`jetsplit.edge.gstreamer`.

**Live** sources (``v4l2``, ``csi``, ``rtsp``, ``http``, ``gst``) read on a grabber thread
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from jetsplit.edge.files import IMAGE_SUFFIXES, ImageFolderSource, VideoFileSource
from jetsplit.edge.frame import Capture, Frame, FrameTimeout, Source
from jetsplit.edge.grabber import Grabber, GrabberTimeout
from jetsplit.edge.gstreamer import (
    APPSINK,
    csi_pipeline,
    gst_capture,
    gstreamer_available,
    need_gstreamer,
    rtsp_pipeline,
)
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
    "is_live",
    "open_source",
    "rtsp_pipeline",
]

log = logging.getLogger(__name__)



class CaptureSource(Source):
    """A live capture (camera, network stream, GStreamer pipeline) read on a
    grabber thread that keeps the newest frame.

    ``read()`` raises :class:`SourceError` when the capture delivers nothing for
    ``stall_timeout_s`` (a camera unplugged, a stream that died), and returns
    ``None`` only after ``close()``.
    """

    live = True

    def __init__(self, uri: str, capture: Capture, *, source_id: str | None = None, stall_timeout_s: float = 5.0,
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


# -- open_source: one opener per scheme ----------------------------------------


@dataclass(frozen=True)
class _Request:
    """What the caller of :func:`open_source` asked for, passed to every opener."""

    uri: str
    rest: str  # the URI after ``scheme://`` (the pipeline for gst:)
    realtime: bool
    fps: float | None
    width: int | None
    height: int | None
    on_bad_image: str
    shuffle_seed: int | None
    common: dict[str, Any]


def _open_file(q: _Request) -> Source:
    path = Path(q.rest).expanduser()
    if path.is_dir() or (path.exists() and path.suffix.lower() in IMAGE_SUFFIXES):
        seed = q.shuffle_seed if path.is_dir() else None
        return ImageFolderSource(q.uri, path, realtime=q.realtime, fps=q.fps, on_bad_image=q.on_bad_image,
                                 shuffle_seed=seed, **q.common)
    if not path.exists():
        raise SourceError(f"{q.uri}: no such file or directory {str(path)!r}")
    return VideoFileSource(q.uri, path, realtime=q.realtime, fps=q.fps, **q.common)


def _open_v4l2(q: _Request) -> Source:
    device = f"/dev/video{q.rest}" if q.rest.isdigit() else q.rest
    if not Path(device).exists():
        raise SourceError(f"{q.uri}: no such device {device!r} (is the camera plugged in? `v4l2-ctl --list-devices`)")
    cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
    for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, q.width), (cv2.CAP_PROP_FRAME_HEIGHT, q.height),
                        (cv2.CAP_PROP_FPS, q.fps)):
        if value:
            cap.set(prop, float(value))
    # One buffer in the driver: the grabber, not V4L2, decides what is newest.
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if not cap.isOpened():
        raise SourceError(f"{q.uri}: cannot open {device!r} (in use by another process, or no permission: group 'video'?)")
    return CaptureSource(q.uri, cap, **q.common)


def _open_csi(q: _Request) -> Source:
    if not q.rest.isdigit():
        raise SourceError(f"{q.uri}: expected csi://N with N the sensor id, got {q.rest!r}")
    need_gstreamer(q.uri, "CSI camera")
    pipeline = csi_pipeline(int(q.rest), q.width or 1280, q.height or 720, int(q.fps or 30))
    hint = "is the sensor connected and nvargus-daemon running (`systemctl status nvargus-daemon`)?"
    return CaptureSource(q.uri, gst_capture(pipeline), hint=hint, **q.common)


def _open_stream(q: _Request) -> Source:
    hint = "stream unreachable or codec unsupported"
    if q.uri.lower().startswith("rtsp") and gstreamer_available():
        return CaptureSource(q.uri, gst_capture(rtsp_pipeline(q.uri)), hint=hint, **q.common)
    # Without GStreamer (and for HTTP, e.g. an IP camera's MJPEG), OpenCV's FFmpeg
    # backend reads the stream, decoding on the CPU: slower, but a stream the
    # operator asked for beats an error.
    if q.uri.lower().startswith("rtsp"):
        log.warning("%s: OpenCV has no GStreamer; decoding with FFmpeg on the CPU", q.uri)
    return CaptureSource(q.uri, cv2.VideoCapture(q.uri, cv2.CAP_FFMPEG), hint=hint, **q.common)


def _open_gst(q: _Request) -> Source:
    need_gstreamer(q.uri, "GStreamer pipeline")
    pipeline = q.rest if "appsink" in q.rest else f"{q.rest} ! {APPSINK}"
    return CaptureSource(q.uri, gst_capture(pipeline), hint=f"GStreamer could not start {pipeline!r}", **q.common)


# Scheme -> (opener, live). Live sources are cameras and streams: they never end on
# their own, and a multi-source agent retries them when they fail.
_OPENERS: dict[str, tuple[Callable[[_Request], Source], bool]] = {
    "file": (_open_file, False),
    "v4l2": (_open_v4l2, True),
    "csi": (_open_csi, True),
    "rtsp": (_open_stream, True),
    "rtsps": (_open_stream, True),
    "http": (_open_stream, True),
    "https": (_open_stream, True),
    "gst": (_open_gst, True),
}


def _split(uri: str) -> tuple[str, str]:
    """``(scheme, rest)``; a bare path is ``file``, a pipeline (``gst:`` or ``a ! b``) ``gst``."""
    if uri.startswith("gst:") or " ! " in uri:
        return "gst", (uri[4:].strip() if uri.startswith("gst:") else uri)
    scheme, sep, rest = uri.partition("://")
    return (scheme.lower(), rest) if sep else ("file", uri)


def is_live(uri: str) -> bool:
    """Whether ``uri`` names a live source (camera, stream, pipeline): one that has
    no end of its own. Unknown schemes are not live (opening them fails)."""
    entry = _OPENERS.get(_split(uri)[0])
    return entry is not None and entry[1]


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
    ``source_id`` names the source in its frames (default: the URI).
    """
    if not uri:
        raise SourceError("source: expected a URI (file://, v4l2://, csi://, rtsp://, http://, gst:), got an empty string")
    scheme, rest = _split(uri)
    entry = _OPENERS.get(scheme)
    if entry is None:
        known = ", ".join(s for s in _OPENERS if s != "gst")
        raise SourceError(f"{uri}: unknown source scheme {scheme!r} (expected {known}, or gst:PIPELINE)")
    common: dict[str, Any] = {"source_id": source_id, "stall_timeout_s": stall_timeout_s}
    return entry[0](_Request(uri, rest, realtime, fps, width, height, on_bad_image, shuffle_seed, common))
