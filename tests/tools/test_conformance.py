"""``jetsplit conformance`` passes on the project's worker and fails on a server
that breaks the spec."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgspec
import pytest
import zmq

from jetsplit.cli import main
from jetsplit.tools.conformance import run_checks


def test_the_worker_passes(make_bundle, worker_thread, capsys) -> None:
    bundles = [make_bundle(mode, name=mode) for mode in ("little-big", "split", "ensemble")]
    worker = worker_thread(*bundles)
    assert main(["conformance", worker.endpoints[0]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out and all(line.startswith(("PASS", "SKIP")) for line in out), [x for x in out if x.startswith("FAIL")]
    passed = [line for line in out if line.startswith("PASS")]
    # What the spec requires of errors: each status code with the request's own id.
    for expected in ("EXPIRED", "BAD_REQUEST: trailing bytes after the header, with its id",
                     "BAD_REQUEST: a key that is not a string, with its id",
                     "TOO_LARGE: a message over max_message_bytes 67108864, with its id",
                     "UNKNOWN_BUNDLE", "UNKNOWN_STAGE", "UNSUPPORTED_VERSION",
                     "order of checks: malformed and late is BAD_REQUEST", "frame as jpeg+none",
                     "carry as i8+zstd", "probs as raw+lz4", "describe"):
        assert any(expected in line for line in passed), expected
    assert len(passed) >= 45


@pytest.fixture
def broken_server(tmp_path) -> Iterator[str]:
    """A ROUTER that pongs properly but answers everything else with an id-0 error."""
    endpoint = f"ipc://{tmp_path}/broken.sock"
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not sock.poll(20):
                continue
            route, *body = sock.recv_multipart()
            try:
                header = msgspec.msgpack.decode(body[-1] if body[0] == b"" else body[0])
            except Exception:
                header = {}
            prefix = [route, b""] if body[0] == b"" else [route]
            if isinstance(header, dict) and header.get("kind") == "ping":
                reply = {"kind": "pong", "v": 2, "id": header.get("id")}
            else:
                reply = {"kind": "error", "v": 2, "id": 0, "status": 2}
            sock.send_multipart([*prefix, msgspec.msgpack.encode(reply)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield endpoint
    stop.set()
    thread.join(5)
    sock.close()


def test_a_server_breaking_the_spec_fails(broken_server: str, capsys) -> None:
    checks = list(run_checks(broken_server, timeout_ms=500))
    assert checks[0].outcome == "PASS"
    failed = [c for c in checks if c.outcome == "FAIL"]
    assert failed and any("describe" in c.name for c in failed)
    assert main(["conformance", broken_server, "--timeout-ms", "500"]) == 1


def test_no_server_is_one_line(tmp_path, capsys) -> None:
    assert main(["conformance", f"ipc://{tmp_path}/nobody.sock", "--timeout-ms", "300"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is a worker listening there?" in err
