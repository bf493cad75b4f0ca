"""``jetsplit bench`` on the tiny real bundles (tests/support/tiny.py) and scikit-learn's digits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.cli import main
from jetsplit.edge.agent import EdgeAgent
from jetsplit.edge.config import EdgeConfig
from jetsplit.edge.sinks import QueueSink
from jetsplit.errors import JetsplitError
from jetsplit.tools.bench import PREPROCESS, bench, format_result, load_frames
from tests.support.frames import digits_folder


def test_every_stage_at_every_batch_size(make_bundle: Any) -> None:
    result = bench(make_bundle("split"), [1, 4], runs=3, data="digits")
    assert [(t.stage, t.where, t.batch) for t in result.timings] == [
        (PREPROCESS, "edge", 1), ("head", "edge", 1), ("tail", "cloud", 1),
        (PREPROCESS, "edge", 4), ("head", "edge", 4), ("tail", "cloud", 4),
    ]
    for t in result.timings:
        assert 0 < t.median_ms <= t.p95_ms
        assert t.samples_per_s == pytest.approx(t.batch * 1000.0 / t.median_ms)
        # The engine runs inside each timed call, so its median cannot exceed the call's.
        assert t.engine_ms is None if t.stage == PREPROCESS else t.engine_ms is not None and t.engine_ms <= t.median_ms
    assert result.frames == "digits@calib" and result.threads == 1 and result.runs == 3


def test_handoff_sizes_follow_the_wire_encoding(make_bundle: Any) -> None:
    def only(bundle: Any) -> Any:
        (h,) = bench(bundle, [1], runs=1, data="digits").handoffs
        return h

    f16 = only(make_bundle("split"))
    assert (f16.after, f16.to, f16.tensors, f16.edge_to_cloud) == ("head", "tail", ("carry",), True)
    assert f16.raw_bytes == 32 * 4 and f16.encodings == {"carry": "f16"}  # (1, 32) float32
    raw = only(make_bundle("split", lambda m: m["wire"].update(activation="raw"), name="raw"))
    i8 = only(make_bundle("split", lambda m: m["wire"].update(activation="i8"), name="i8"))
    assert raw.raw_bytes == i8.raw_bytes == f16.raw_bytes
    # Payloads of 128, 64 and 32 bytes; the headers differ only in small fields
    # (the payload's size, i8's scale, and "encoding": "f16", 13 bytes, which a raw
    # descriptor leaves out as the default).
    assert raw.wire_bytes - f16.wire_bytes == pytest.approx(64 - 13, abs=2) and i8.wire_bytes < f16.wire_bytes
    lz4 = only(make_bundle("split", lambda m: m["wire"].update(compression="lz4"), name="lz4"))
    assert lz4.encodings == {"carry": "f16+lz4"} and lz4.wire_bytes != f16.wire_bytes


def test_handoffs_of_an_averaging_chain(make_bundle: Any) -> None:
    first, second = bench(make_bundle("ensemble"), [1], runs=1, data="digits").handoffs
    # An 8x8 uint8 frame, the (1, 10) float32 running mean and its int32 count.
    assert first.tensors == second.tensors == ("frame", "probs", "count")
    assert first.raw_bytes == second.raw_bytes == 64 + 40 + 4
    assert first.edge_to_cloud and not second.edge_to_cloud  # the ensemble's m1 is its first cloud stage


def test_wire_bytes_are_what_the_agent_sends(make_bundle: Any, worker_thread: Any, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    (handoff,) = bench(bundle, [1], runs=1, data="digits").handoffs
    digits_folder(tmp_path / "frames", 60)
    endpoint = worker_thread(bundle).endpoints[0]
    agent = EdgeAgent(EdgeConfig(bundle=str(bundle.root), source=str(tmp_path / "frames"), cloud=(endpoint,),
                                 deadline_ms=2000, sinks=()), sinks=QueueSink())
    try:
        sent = [r.bytes_up for r in agent.results() if r.bytes_up]
    finally:
        agent.close()
    assert sent
    # The same tensors and encodings; only the request id's and the remaining
    # deadline's encodings in the header may differ by a few bytes.
    assert all(abs(b - handoff.wire_bytes) <= 8 for b in sent), (sent, handoff.wire_bytes)


def test_frames_come_from_the_bundles_tuning_data_or_photos(make_bundle: Any) -> None:
    tuned = make_bundle("little-big", lambda m: m.update(meta={"tuned_on": "digits@calib"}), name="tuned")
    frames, source = load_frames(tuned, None)
    assert source == "digits@calib" and frames[0].shape == (8, 8)
    frames, source = load_frames(make_bundle("little-big"), None)
    assert source.startswith("scikit-image") and len(frames) == 6
    assert all(f.dtype == np.uint8 and f.shape[0] > 100 for f in frames)  # real photos, as a camera gives them
    # Tuned on a folder of another machine: photos, saying why.
    elsewhere = make_bundle("little-big", lambda m: m.update(meta={"tuned_on": "folder:/nonexistent/imgs@calib"}),
                            name="elsewhere")
    frames, source = load_frames(elsewhere, None)
    assert source.startswith("scikit-image") and "tuning data is not readable here" in source and "/nonexistent/imgs" in source
    with pytest.raises(JetsplitError, match="/nonexistent/imgs"):
        load_frames(elsewhere, "folder:/nonexistent/imgs")  # asked for: an error


def test_cli_json_and_text(make_bundle: Any, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(make_bundle("little-big").root)
    assert main(["bench", root, "--batch", "1", "2", "--runs", "2", "--data", "digits", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "onnxruntime" and len(out["timings"]) == 6
    assert out["handoffs"][0]["tensors"] == ["frame"] and out["handoffs"][0]["raw_bytes"] == 64
    assert main(["bench", root, "--batch", "1", "--runs", "2", "--data", "digits"]) == 0
    text = capsys.readouterr().out
    assert "little  big  frame" in text and "<- edge to cloud" in text and "median ms" in text


@pytest.mark.parametrize(("args", "message"), [
    (["/nonexistent/bundle"], "bundle '/nonexistent/bundle': no such directory"),
    (["BUNDLE", "--batch", "0"], "--batch: expected sizes >= 1, got [0]"),
    (["BUNDLE", "--runs", "0"], "--runs: expected at least 1, got 0"),
    (["BUNDLE", "--threads", "0"], "--threads: expected at least 1, got 0"),
    (["BUNDLE", "--backend", "openvino"], "engine backend 'openvino': expected one of onnxruntime, tensorrt"),
    (["BUNDLE", "--data", "folder:/nonexistent"], "/nonexistent"),
])
def test_bad_input(make_bundle: Any, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(make_bundle("split").root)
    assert main(["bench", *[root if a == "BUNDLE" else a for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jetsplit bench: error: ") and message in err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_missing_is_one_line(make_bundle: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(make_bundle("split").root), "--backend", "tensorrt", "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tensorrt" in err


def test_bench_measures_the_board_while_it_times(make_bundle: Any, tmp_path: Path) -> None:
    from jetsplit.edge.power import PowerConfig
    from jetsplit.tools.simboard import SimBoard

    SimBoard(tmp_path / "sys", "nano").create().set(7.0)
    power = PowerConfig(source="ina3221", sysfs_root=str(tmp_path / "sys"), interval_ms=5)
    result = bench(make_bundle("split"), [1], runs=20, data="digits", power=power)
    assert result.power is not None and result.power["source"] == "ina3221" and result.power["interval_ms"] == 5.0
    for t in result.timings:
        assert t.watts == pytest.approx(7.0, abs=0.01)
        # Energy per call is the board's 7 W over the calls' share of the window.
        assert t.energy_mj is not None and 0 < t.energy_mj <= 7.0 * t.p95_ms * 1.5 + 1.0
    assert "board W" in format_result(result, "split")
    # Without rails nothing is estimated: no columns, no figures.
    plain = bench(make_bundle("split", name="b2"), [1], runs=2, data="digits",
                  power=PowerConfig(sysfs_root=str(tmp_path / "none"), jtop_socket=str(tmp_path / "no.sock")))
    assert plain.power is None and all(t.watts is None for t in plain.timings)


def test_bench_power_flag_mistakes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "demo:split", "--power", "sysfs:"]) == 2
    assert "--power: expected sysfs or sysfs:ROOT" in capsys.readouterr().err
    assert main(["bench", "demo:split", "--power-interval-ms", "0"]) == 2
    assert "--power-interval-ms" in capsys.readouterr().err
