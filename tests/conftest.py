"""Shared fixtures: tiny real ONNX models and bundles built from them
(tests/support/tiny.py), a worker in a thread, Jetson power trees in sysfs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.bundle import Bundle
from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.worker import Worker
from tests.support.tiny import build_tiny_models, edge_offloads, tiny_bundle


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def make_bundle(tmp_path: Path, tiny_models: dict[str, Path]) -> Any:
    """make_bundle(mode, edit=None) -> Bundle in a fresh directory."""

    def make(mode: str, edit: Any = None, name: str = "bundle") -> Bundle:
        return tiny_bundle(tmp_path / name, mode, tiny_models, edit)

    return make


@pytest.fixture
def offloads() -> Callable[[Bundle, int], tuple[int, list[dict[str, np.ndarray]], np.ndarray]]:
    """:func:`edge_offloads`: offloads(bundle, n) -> (stage, tensors, frames)."""
    return edge_offloads


@pytest.fixture
def worker_thread(tmp_path: Path) -> Iterator[Any]:
    """worker_thread(*bundles, endpoint=None, **config) -> a real Worker serving
    on ``ipc://`` in a thread of this process (stopped and drained at teardown)."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(*bundles: Bundle, endpoint: str | None = None, **config: Any) -> Worker:
        ep = endpoint or f"ipc://{tmp_path}/worker{len(running)}.sock"
        worker = Worker(CloudConfig(bind=(ep,), bundles=tuple(str(b.root) for b in bundles), **config))
        worker.start()
        stop = threading.Event()
        thread = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        return worker

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(10)


# -- Jetson power monitors in sysfs ---------------------------------------------
# Trees laid out as on the boards (file names, units, symlinks), written by the
# simulated board (``jetsplit simboard``) at its idle readings.


@pytest.fixture
def jetson_sysfs(tmp_path: Path) -> Callable[..., Path]:
    """jetson_sysfs(board, root=tmp_path) -> root, with ``board``'s INA3221
    monitors written under ``root/bus/i2c`` (boards: orin-nano, agx-orin, nano)."""
    from jetsplit.tools.simboard import SimBoard

    def make(board: str, root: Path | None = None) -> Path:
        root = tmp_path if root is None else root
        SimBoard(root, board).create()
        return root

    return make
