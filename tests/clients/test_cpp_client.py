"""The C++ client (clients/cpp), written from protocol/SPEC.md alone, against a
real ``jetsplit cloud serve`` process.

- its own tests: every encoding and compression it sends and every status it
  handles (build/cpp/jetsplit_client_tests);
- the example, knowing only the endpoint, classifies 200 MNIST digits sent as
  JPEG files and as PGM files through a worker serving ``demo:little-big``, at the
  accuracy of the bundle's big model (the cloud stage) run here in Python.

``make cpp`` (part of ``make test``) installs the distribution's packages and
builds into build/cpp; when the binaries are not there this module builds them,
and skips, saying why, only when the compiler, CMake or the packages are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from jetsplit.bundle import load_bundle
from jetsplit.chain import Chain
from jetsplit.datasets import load_dataset
from tests.support.daemons import start_worker

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "clients" / "cpp"
BUILD = ROOT / "build" / "cpp"
EXAMPLE = BUILD / "jetsplit_client_example"
TESTS = BUILD / "jetsplit_client_tests"
HEADERS = ("zmq.h", "msgpack.hpp", "lz4frame.h", "zstd.h")
N = 200


def _missing() -> list[str]:
    missing = [tool for tool in ("cmake", "c++", "pkg-config") if shutil.which(tool) is None]
    missing += [h for h in HEADERS if not any((Path(d) / h).is_file() for d in ("/usr/include", "/usr/local/include"))]
    return missing


@pytest.fixture(scope="module")
def built() -> Path:
    """build/cpp with the example and the tests, built now if need be."""
    missing = _missing()
    if missing:
        pytest.skip(f"the C++ client cannot be built here: missing {', '.join(missing)} "
                    "(clients/cpp/deps.sh installs them with apt-get as root)")
    sources = [p for p in SOURCE.rglob("*") if p.is_file()]
    newest = max(p.stat().st_mtime for p in sources)
    if not all(b.exists() and b.stat().st_mtime >= newest for b in (EXAMPLE, TESTS)):
        subprocess.run(["cmake", "-S", str(SOURCE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"], check=True,
                       capture_output=True, timeout=300)
        done = subprocess.run(["cmake", "--build", str(BUILD), "-j2"], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return BUILD


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    """A real worker serving demo:little-big (frames) and demo:split (activations)."""
    daemon, endpoint = start_worker("demo:little-big", "demo:split", bind="tcp://127.0.0.1:0")
    try:
        yield endpoint
    finally:
        daemon.stop()


def test_cpp_tests_pass_against_the_worker(built: Path, worker: str, tmp_path: Path) -> None:
    digit = load_dataset("mnist", "test").images[0]
    assert cv2.imwrite(str(tmp_path / "d.jpg"), digit) and cv2.imwrite(str(tmp_path / "d.pgm"), digit)
    done = subprocess.run([str(TESTS), worker, str(tmp_path / "d.jpg"), str(tmp_path / "d.pgm")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line.startswith("not ok")]
    assert sum(line.startswith("ok ") for line in lines) >= 28


def _big_model_predictions(images: np.ndarray) -> np.ndarray:
    """What the bundle's cloud stage (the big model) answers for each image, run here."""
    bundle = load_bundle("demo:little-big")
    stage = bundle.first_cloud_stage()
    assert stage is not None
    with Chain.open(bundle, where="cloud") as chain:
        res = chain.run_from(stage, chain.preprocess(images), thresholds=[None] * len(bundle.stages))
    return np.asarray(res.probs).argmax(axis=1)


def test_example_classifies_200_mnist_digits_at_the_big_models_accuracy(built: Path, worker: str,
                                                                        tmp_path: Path) -> None:
    data = load_dataset("mnist", "test")
    images, labels = data.images[:N], data.labels[:N]
    jpegs, pgms = [], []
    for i, image in enumerate(images):
        jpegs.append(tmp_path / f"{i:03d}.jpg")
        pgms.append(tmp_path / f"{i:03d}.pgm")
        assert cv2.imwrite(str(jpegs[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert cv2.imwrite(str(pgms[-1]), image)
    # Knowing only the endpoint: the example describes the worker and picks the bundle.
    done = subprocess.run([str(EXAMPLE), worker, *map(str, jpegs), *map(str, pgms)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in (*jpegs, *pgms)]
    assert all(r["status"] == "OK" and r["label"] == str(r["class_id"]) and 0 < r["score"] <= 1 for r in rows)
    got_jpeg = np.array([r["class_id"] for r in rows[:N]])
    got_pgm = np.array([r["class_id"] for r in rows[N:]])
    big = _big_model_predictions(images)
    big_accuracy = float((big == labels).mean())
    pgm_accuracy = float((got_pgm == labels).mean())
    jpeg_accuracy = float((got_jpeg == labels).mean())
    print(f"big model {big_accuracy:.3f}, C++ PGM {pgm_accuracy:.3f}, C++ JPEG {jpeg_accuracy:.3f} on {N} digits")
    # PGM is lossless: the very answers of the big model, digit for digit.
    np.testing.assert_array_equal(got_pgm, big)
    assert pgm_accuracy == big_accuracy
    # JPEG (quality 95) is lossy: at most two digits of 200 may change.
    assert abs(jpeg_accuracy - big_accuracy) <= 0.01
    assert big_accuracy >= 0.95


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tcp://127.0.0.1:9"], "expected an ENDPOINT and at least one IMAGE"),
        (["127.0.0.1:5555", "x.pgm"], "ENDPOINT: expected an endpoint"),
        (["--bundle"], "--bundle needs a value"),
    ],
)
def test_example_usage_mistakes_are_one_line(built: Path, args: list[str], says: str) -> None:
    done = subprocess.run([str(EXAMPLE), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr.splitlines()[0]


def test_example_mistakes_against_a_worker(built: Path, worker: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    done = subprocess.run([str(EXAMPLE), worker, str(tmp_path / "notes.txt")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "not a JPEG, binary PGM (P5) or binary PPM (P6)" in done.stderr
    done = subprocess.run([str(EXAMPLE), worker, str(tmp_path / "missing.pgm")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "missing.pgm: cannot open" in done.stderr
    done = subprocess.run([str(EXAMPLE), worker, "--bundle", "nope", str(tmp_path / "notes.txt")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "serves no bundle named nope" in done.stderr and "little-big" in done.stderr
    done = subprocess.run([str(EXAMPLE), "tcp://127.0.0.1:9", str(tmp_path / "notes.txt"), "--timeout-ms", "300"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no connection to tcp://127.0.0.1:9" in done.stderr


def test_example_sends_a_colour_ppm_and_the_bundle_is_chosen_by_name(built: Path, worker: str,
                                                                     tmp_path: Path) -> None:
    digit = load_dataset("mnist", "test").images[1]
    colour = cv2.cvtColor(digit, cv2.COLOR_GRAY2BGR)
    assert cv2.imwrite(str(tmp_path / "d.ppm"), colour) and cv2.imwrite(str(tmp_path / "d.pgm"), digit)
    done = subprocess.run([str(EXAMPLE), worker, "--bundle", "little-big", str(tmp_path / "d.ppm"),
                           str(tmp_path / "d.pgm")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ppm, pgm = (json.loads(line) for line in done.stdout.splitlines())
    assert ppm["class_id"] == pgm["class_id"]
