"""Sources on real files (a video written with OpenCV, PNG folders of MNIST
digits), the GStreamer error, and the grabber's newest-frame contract."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from jetsplit.datasets import load_dataset
from jetsplit.edge.grabber import Grabber, GrabberTimeout
from jetsplit.edge.sources import CaptureSource, gstreamer_available, open_source
from jetsplit.errors import SourceError


@pytest.fixture(scope="module")
def digits() -> Any:
    data = load_dataset("mnist", "test")
    # Two of each class, interleaved: a stream that is not sorted by class.
    pick = np.stack([np.flatnonzero(data.labels == c)[:2] for c in range(10)], axis=1).ravel()
    return data.images[pick], data.labels[pick], data.class_names


def _bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(img, (64, 64), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)


@pytest.fixture
def video(tmp_path: Path, digits: Any) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 64))
    assert writer.isOpened()
    for img in digits[0]:
        writer.write(_bgr(img))
    writer.release()
    return path


def test_video_file_every_frame_in_order(video: Path, digits: Any) -> None:
    with open_source(f"file://{video}") as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(len(digits[0])))
    assert src.dropped == 0 and not src.live
    for frame, img in zip(frames, digits[0]):
        assert frame.image.shape == (64, 64, 3) and frame.image.dtype == np.uint8
        assert np.abs(frame.image.astype(int) - _bgr(img)).mean() < 8  # MJPG is lossy
        assert frame.truth is None and frame.source_id == f"file://{video}"
    assert all(a.t_capture <= b.t_capture for a, b in zip(frames, frames[1:]))


def test_video_realtime_drops_what_the_consumer_misses(video: Path) -> None:
    src = open_source(str(video), realtime=True, fps=1000.0)
    first = src.read(timeout=5.0)
    assert first is not None
    grabber = src._grabber  # type: ignore[attr-defined]
    grabber._thread.join(5.0)  # the "camera" plays on while we do not read
    last = src.read(timeout=5.0)
    assert last is not None and last.index == 19
    assert src.read(timeout=5.0) is None
    assert src.dropped == 20 - 2
    src.close()


def test_folder_with_class_subfolders(tmp_path: Path, digits: Any) -> None:
    images, labels, names = digits
    for i, (img, y) in enumerate(zip(images, labels)):
        out = tmp_path / names[y] / f"{i:03d}.png"
        out.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(out), img)
    (tmp_path / names[labels[0]] / "zzz.png").write_bytes(b"not a png")
    with open_source(f"file://{tmp_path}") as src:
        frames = list(src)
    assert src.labels == tuple(sorted({names[y] for y in labels}))
    assert len(frames) == len(images) and src.skipped == 1
    assert [f.index for f in frames] == list(range(len(images)))
    by_name = {int(p.stem): t for p, t in src.items if p.stem.isdigit()}  # type: ignore[attr-defined]
    for i, y in enumerate(labels):
        assert by_name[i] == names[y]
    truth_of = {f.image.tobytes(): f.truth for f in frames}
    assert all(truth_of[img.tobytes()] == names[y] for img, y in zip(images, labels))
    assert frames[0].image.ndim == 2  # gray PNGs stay gray
    with pytest.raises(SourceError, match="zzz.png"):
        list(open_source(str(tmp_path), on_bad_image="raise"))
    shuffled = [f.truth for f in open_source(str(tmp_path), shuffle_seed=1)]
    assert sorted(map(str, shuffled)) == sorted(f.truth for f in frames) and shuffled != [f.truth for f in frames]


def test_flat_folder_and_single_image(tmp_path: Path, digits: Any) -> None:
    for i, img in enumerate(digits[0][:3]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    frames = list(open_source(str(tmp_path)))
    assert len(frames) == 3 and all(f.truth is None for f in frames)
    single = list(open_source(f"file://{tmp_path / '1.png'}"))
    assert len(single) == 1 and np.array_equal(single[0].image, digits[0][1])


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file:///no/such/clip.mp4", "no such file"),
        ("/no/such/dir/", "no such file"),
        ("v4l2:///dev/video-none", "no such device"),
        ("ftp://camera/stream", "unknown source scheme"),
        ("http://127.0.0.1:9/stream.mjpg", "cannot open the capture"),
        ("csi://front", "expected csi://N"),
        ("", "expected a URI"),
    ],
)
def test_open_errors(uri: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(uri)


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(SourceError, match="none of the 1 images decodes"):
        list(open_source(str(tmp_path / "bad")))
    (tmp_path / "clip.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="clip.mp4"):
        list(open_source(str(tmp_path / "clip.mp4")))


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer: nothing to refuse")
@pytest.mark.parametrize("uri", ["csi://0", "gst:videotestsrc ! videoconvert ! appsink", "videotestsrc num-buffers=3 ! videoconvert"])
def test_gstreamer_source_on_pypi_opencv(uri: str) -> None:
    with pytest.raises(SourceError) as info:
        open_source(uri)
    message = str(info.value)
    assert "\n" not in message and "without GStreamer" not in message  # says it plainly, in one line
    assert "GStreamer" in message and "JetPack's system OpenCV" in message and uri in message


def test_gstreamer_detection_reads_build_information() -> None:
    assert gstreamer_available("  Video I/O:\n    GStreamer:                   YES (1.20.3)\n")
    assert not gstreamer_available("  Video I/O:\n    GStreamer:                   NO\n")
    assert not gstreamer_available("nothing here")


# -- live capture and the grabber -----------------------------------------------------


class _FakeCamera:
    """Delivers ``n`` frames, then fails every read (an unplugged camera)."""

    def __init__(self, n: int) -> None:
        self.n, self.reads, self.released = n, 0, False

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def read(self) -> tuple[bool, Any]:
        self.reads += 1
        if self.reads > self.n:
            return False, None
        return True, np.full((4, 4, 3), self.reads, np.uint8)

    def release(self) -> None:
        self.released = True


def test_camera_that_stops_delivering() -> None:
    cam = _FakeCamera(3)
    src = CaptureSource("v4l2:///dev/fake", cam, stall_timeout_s=0.3)
    got = []
    with pytest.raises(SourceError, match="stopped delivering"):
        while (frame := src.read(timeout=5.0)) is not None:
            got.append(frame.index)
    assert got and got[-1] == 2 and len(got) + src.dropped == 3
    src.close()
    assert cam.released and src.read() is None


def test_grabber_keeps_the_newest_and_counts_drops() -> None:
    produced = threading.Event()
    items = iter(range(10))

    def read() -> int | None:
        item = next(items, None)
        if item is None:
            produced.set()
        return item

    grabber = Grabber(read, name="test").start()
    assert produced.wait(5.0)
    grabber._thread.join(5.0)  # type: ignore[union-attr]
    assert grabber.get(timeout=1.0) == 9
    assert grabber.get(timeout=1.0) is None  # the end marker
    assert grabber.dropped == 9 and grabber.grabbed == 10 and grabber.delivered == 1


def test_grabber_passes_the_error_on_and_times_out() -> None:
    calls = iter([1, 2])

    def read() -> int | None:
        item = next(calls, None)
        if item is None:
            raise OSError("device gone")
        return item

    grabber = Grabber(read).start()
    grabber._thread.join(5.0)  # type: ignore[union-attr]
    assert grabber.get(timeout=1.0) == 2
    with pytest.raises(OSError, match="device gone"):
        grabber.get(timeout=1.0)
    assert not grabber.alive

    stuck = threading.Event()

    def hung_read() -> None:
        stuck.wait(5.0)  # a camera that hangs until released, then gives no frame
        return None

    slow = Grabber(hung_read).start()
    with pytest.raises(GrabberTimeout):
        slow.get(timeout=0.05)
    stuck.set()
    assert slow.stop(timeout=5.0)
