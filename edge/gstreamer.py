"""GStreamer for the edge's live sources: whether this OpenCV has it, and the
pipelines for Jetson's CSI cameras and RTSP streams.

PyPI's ``opencv-python`` wheels are built without GStreamer; JetPack's system
OpenCV has it. A source that needs GStreamer on an OpenCV without it gets one
line saying which OpenCV was found and what to use instead.

    >>> csi_pipeline(0, 1280, 720, 30)        # doctest: +SKIP
    'nvarguscamerasrc sensor-id=0 ! ... ! appsink drop=true max-buffers=1 sync=false'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2

from jetsplit.errors import SourceError

__all__ = ["APPSINK", "csi_pipeline", "gst_capture", "gstreamer_available", "need_gstreamer", "on_jetson",
           "rtsp_pipeline"]

# One buffer, dropped when full: the edge's grabber, not GStreamer, decides what is newest.
APPSINK = "appsink drop=true max-buffers=1 sync=false"


def gstreamer_available(build_info: str | None = None) -> bool:
    """Whether this OpenCV was built with GStreamer (PyPI's wheels are not)."""
    info = cv2.getBuildInformation() if build_info is None else build_info
    for line in info.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "GStreamer":
            return value.strip().upper().startswith("YES")
    return False


def need_gstreamer(uri: str, kind: str) -> None:
    """Raise :class:`SourceError` naming the OpenCV found, unless it has GStreamer."""
    if not gstreamer_available():
        raise SourceError(
            f"{uri}: {kind} sources need OpenCV with GStreamer, and this OpenCV {cv2.__version__} "
            f"({Path(cv2.__file__).parent}) has none (PyPI's opencv-python wheels never do); on Jetson use "
            "JetPack's system OpenCV: run with /usr/bin/python3 or a venv made with --system-site-packages, "
            "without opencv-python from PyPI"
        )


def on_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


def _to_bgr(jetson: bool) -> str:
    # Jetson decoders and the camera deliver NVMM buffers: nvvidconv brings them
    # to system memory; videoconvert then makes the BGR that OpenCV expects.
    head = "nvvidconv ! video/x-raw, format=BGRx ! " if jetson else ""
    return f"{head}videoconvert ! video/x-raw, format=BGR ! {APPSINK}"


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The ``nvarguscamerasrc`` pipeline for a MIPI CSI camera (Jetson only)."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1, format=NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
        f"videoconvert ! video/x-raw, format=BGR ! {APPSINK}"
    )


def rtsp_pipeline(url: str, latency_ms: int = 200, jetson: bool | None = None) -> str:
    """A decoding pipeline for an RTSP stream (hardware decoders on Jetson)."""
    return f"rtspsrc location={url} latency={latency_ms} ! decodebin ! {_to_bgr(on_jetson() if jetson is None else jetson)}"


def gst_capture(pipeline: str) -> Any:
    """``cv2.VideoCapture`` on a GStreamer pipeline."""
    return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
