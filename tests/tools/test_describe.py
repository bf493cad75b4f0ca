"""``jetsplit describe ENDPOINT [--json]`` against a real worker, and its mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jetsplit.cli import main


def test_describe_prints_bundles_stages_and_tensors(make_bundle, worker_thread, capsys) -> None:
    bundle = make_bundle("split")
    worker = worker_thread(bundle)
    assert main(["describe", worker.endpoints[0]]) == 0
    out = capsys.readouterr().out
    assert f"bundle 'tiny-split' {bundle.fingerprint}" in out
    assert "stage 1 'tail' on the cloud" in out and "request tensors: carry float32 [1, 32]" in out
    assert main(["describe", worker.endpoints[0], "--json"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["kind"] == "description" and reply["bundles"][0]["fingerprint"] == bundle.fingerprint


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["ipc:///nonexistent/worker.sock", "--timeout-ms", "300"], "no worker reachable"),
        (["tcp:/127.0.0.1:5555"], "ENDPOINT: expected an endpoint"),
        (["tcp://127.0.0.1:port"], "numeric port"),
        (["ipc:///x", "--curve-secret", "/nonexistent"], "expected both --curve-secret and --curve-server-key"),
    ],
)
def test_describe_mistakes_are_one_line(args: list[str], says: str, capsys, tmp_path: Path) -> None:
    assert main(["describe", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err
