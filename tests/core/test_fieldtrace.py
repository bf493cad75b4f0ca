"""Field traces: written by the agent, read as a Trace labelled by the cloud."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jetsplit.bundle import load_bundle
from jetsplit.errors import ConfigError, DataError
from jetsplit.fieldtrace import FieldTraceWriter, _repeats, load_trace, read_any_trace
from jetsplit.tools import tune as tune_cli


def _write(path: Path, bundle: str = "demo:split", rate: float = 0.25) -> None:
    w = FieldTraceWriter(path, load_bundle(bundle), rate)
    # Three offloads (unsure, scores low) and two audits of accepted frames.
    for i, (score, edge, cloud) in enumerate([(0.1, 3, 5), (0.2, 4, 4), (0.3, 1, 7)]):
        w.record("offload", i, "cam0", score, edge, cloud, 1.0, edge_ms=0.4, rtt_ms=2.0, bytes_up=900)
    w.record("audit", 10, "cam0", 0.95, 2, 2, 1 / rate)
    w.record("audit", 11, "cam1", 0.97, 6, 8, 1 / rate)
    w.close()


def test_round_trip_weights_labels_and_stages(tmp_path: Path) -> None:
    path = tmp_path / "field.jsonl"
    _write(path)
    t = read_any_trace(path)
    assert t.stage_names == ("head", "tail") and t.meta["field"] is True
    assert t.n == 3 + 2 * 4  # audits stand for 1 / 0.25 accepted frames each
    assert t.meta["field_records"] == {"offload": 3, "audit": 2}
    assert (t.labels == t.pred[:, 1]).all() and t.full().accuracy == 1.0
    # At the bundle's threshold the audited frames are kept on the edge: 4 of 8 right.
    thr = load_bundle("demo:split").thresholds()
    stats = t.cascade(thr)
    assert stats.exit_fraction[1] == pytest.approx(3 / 11)
    assert stats.accuracy == pytest.approx((3 + 4) / 11)


def test_fractional_weights_keep_their_total() -> None:
    reps = _repeats([1 / 0.3] * 30)
    assert reps.sum() == 100 and set(reps) <= {3, 4}


@pytest.mark.parametrize("text, message", [
    ("", "no version-1 header line"),
    ('{"v": 1, "kind": "header", "stages": ["a", "b"]}\nnot json\n', "line 2: not JSON"),
    ('{"v": 1, "kind": "header", "stages": ["a", "b"]}\n', "no offloaded or audited frames recorded"),
])
def test_bad_field_traces_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{}\n" if not text else text)
    with pytest.raises(DataError, match=message):
        load_trace(path)


def test_tune_from_a_field_trace_writes_the_gate_and_its_curve(tmp_path: Path) -> None:
    path = tmp_path / "field.jsonl"
    _write(path)
    out = tmp_path / "tuned"
    assert tune_cli.main([str(path), "--out", str(out), "--max-accuracy-drop", "5"]) == 0
    tuned = load_bundle(str(out))
    summary = json.loads((out / "tuning.json").read_text())
    # Agreement with the cloud within 5 points needs the disagreeing audit offloaded.
    assert summary["calib"]["accuracy"] >= 0.95
    assert tuned.stages[0].gate is not None and tuned.stages[0].gate.threshold > 0.95
    assert len(tuned.stages[0].gate.curve_threshold) >= 2


def test_tune_refuses_a_field_trace_without_an_accuracy_objective(tmp_path: Path) -> None:
    path = tmp_path / "field.jsonl"
    _write(path)
    with pytest.raises(ConfigError, match="give --max-accuracy-drop PT"):
        tune_cli.main([str(path), "--out", str(tmp_path / "o")])


def test_tune_refuses_a_field_trace_for_several_gates(tmp_path: Path) -> None:
    path = tmp_path / "field.jsonl"
    _write(path, "demo:ensemble")
    with pytest.raises(ConfigError, match="re-tunes only the gate before the cloud"):
        tune_cli.main([str(path), "--out", str(tmp_path / "o"), "--max-accuracy-drop", "1"])


def test_writer_names_an_unwritable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="cannot write"):
        FieldTraceWriter(tmp_path / "file" / "x.jsonl", load_bundle("demo:split"), 0.1)


def test_repeats_of_zero_weight_drop_the_row() -> None:
    assert list(_repeats([1.0, 0.0, 2.0])) == [1, 0, 2]
    assert np.sum(_repeats([0.5, 0.5, 0.5, 0.5])) == 2
