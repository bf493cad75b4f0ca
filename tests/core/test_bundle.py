"""Bundle loading: strict validation with errors that name what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jetsplit.bundle import MANIFEST, load_bundle, write_bundle
from jetsplit.chain import Chain
from jetsplit.errors import BundleError


def test_round_trip_and_fingerprint_stable(make_bundle) -> None:
    b = make_bundle("little-big")
    again = load_bundle(b.root)
    assert again.fingerprint == b.fingerprint and len(b.fingerprint) == 64
    assert [s.name for s in again.stages] == ["little", "big"]
    assert again.stages[0].gate is not None and again.stages[0].gate.threshold == 0.3


def test_fingerprint_changes_with_threshold(make_bundle) -> None:
    a = make_bundle("little-big", name="a")
    b = make_bundle("little-big", edit=lambda m: m["stage"][0]["gate"].update(threshold=0.31), name="b")
    assert a.fingerprint != b.fingerprint


def test_model_changed_after_hashing(make_bundle) -> None:
    b = make_bundle("little-big")
    with open(b.root / "little.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"file 'little.onnx' changed after hashing \(sha256 expected"):
        load_bundle(b.root)


def test_missing_bundle_dir(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such directory"):
        load_bundle(tmp_path / "nope")


def test_missing_file(make_bundle) -> None:
    b = make_bundle("little-big")
    (b.root / "linear.onnx").unlink()
    with pytest.raises(BundleError, match="file 'linear.onnx' is missing"):
        load_bundle(b.root)


def _rewrite(root: Path, old: str, new: str) -> None:
    p = root / MANIFEST
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("schema = 1", "schema = 2", r"schema: expected 1 .* got 2"),
        ('where = "edge"', 'where = "phone"', r"\[\[stage\]\] 'little'.where: expected one of edge, cloud, got 'phone'"),
        ('kind = "margin"', 'kind = "vibes"', r"gate.kind: expected one of margin, maxprob"),
        ("threshold = 0.3", 'threshold = "high"', r"threshold: expected a number, got 'high'"),
        ("height = 8", "height = 8\nhieght = 9", r"\[input\]: unknown key\(s\) hieght"),
        ("height = 8", "", r"\[input\].height: required field is missing"),
        ('name = "little"', 'name = "little"\nsecret = 1', r"\[\[stage\]\] 'little': unknown key\(s\) secret"),
        ('colour = "gray"', 'colour = "purple"', r"\[input\].colour: expected one of gray, rgb, bgr, got 'purple'"),
    ],
)
def test_manifest_errors_name_the_field(make_bundle, old: str, new: str, message: str) -> None:
    b = make_bundle("little-big")
    _rewrite(b.root, old, new)
    with pytest.raises(BundleError, match=message):
        load_bundle(b.root)


def _edit_stage(key: str, value: Any, stage: int = 0) -> Any:
    def edit(m: dict[str, Any]) -> None:
        m["stage"][stage][key] = value

    return edit


@pytest.mark.parametrize(
    ("mode", "edit", "message"),
    [
        ("little-big", _edit_stage("where", "cloud", 0), None),  # cloud then cloud is fine
        ("little-big", _edit_stage("where", "edge", 1), None),
        ("split", _edit_stage("input", "carry", 0), r"'carry' needs the previous stage"),
        ("little-big", lambda m: m["stage"][0].pop("gate"), r"every stage but the last needs a gate"),
        ("ensemble", _edit_stage("where", "edge", 2), r"edge stages must be a prefix"),
        ("little-big", lambda m: m["stage"][1].update(combine="weighted", combine_weight=1.5),
         r"\[\[stage\]\] 'big'.combine_weight: expected a number in 0..1, got 1.5"),
        ("little-big", _edit_stage("combine_weight", 0.5, 1),
         r"'big'.combine_weight: only with combine = \"weighted\", got combine = 'replace'"),
        ("little-big", lambda m: m["stage"][1].update(combine="weighted", combine_weight=0.5), None),
    ],
)
def test_chain_rules(make_bundle, mode: str, edit: Any, message: str | None) -> None:
    if message is None:
        make_bundle(mode, edit=edit)
        return
    with pytest.raises(BundleError, match=message):
        make_bundle(mode, edit=edit)


def test_wrong_input_shape_names_expected_and_actual(make_bundle) -> None:
    # The models take 8x8; a manifest that says 28x28 must be refused at open.
    b = make_bundle("little-big", edit=lambda m: m["input"].update(height=28, width=28))
    with pytest.raises(BundleError, match=r"input 'image': expected \(\?, 1, 28, 28\) float32 from \[input\], got \(\?, 1, 8, 8\) float32"):
        Chain.open(b)


def test_wrong_scores_output_name(make_bundle) -> None:
    b = make_bundle("little-big", edit=_edit_stage("scores", "probs"))
    with pytest.raises(Exception, match=r"no output named 'probs' \(outputs: logits"):
        Chain.open(b)


def test_file_outside_bundle_refused(make_bundle, tmp_path: Path) -> None:
    b = make_bundle("little-big")
    _rewrite(b.root, '"little.onnx" = ', '"../little.onnx" = ')
    with pytest.raises(BundleError, match="expected a path inside the bundle"):
        load_bundle(b.root)


def test_write_bundle_lists_only_used_files(make_bundle) -> None:
    b = make_bundle("split")
    assert sorted(b.files) == ["head.onnx", "tail.onnx"]
    again = write_bundle(b.root, {"schema": 1, "name": "x", "input": {"height": 8, "width": 8, "colour": "gray"},
                                  "labels": {"names": ["a", "b"]},
                                  "stage": [{"name": "only", "model": "tail.onnx"}]})
    assert sorted(again.files) == ["tail.onnx"]


def test_demo_spec_unknown() -> None:
    with pytest.raises(BundleError, match="demo bundle 'nope': expected one of little-big, ensemble, split"):
        load_bundle("demo:nope")
