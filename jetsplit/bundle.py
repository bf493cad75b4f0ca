"""The bundle: the unit of deployment.

A bundle is a directory holding ``bundle.toml``, the ONNX partitions and the gate
parameters. The manifest names the input preprocessing, the labels, the stages and
their gates with thresholds, and the wire encodings; its ``[files]`` table holds the
SHA-256 of every file the bundle uses, so a model changed after hashing is caught
at load. The fingerprint is a SHA-256 over the canonical manifest (which includes
those file hashes): edge and cloud refuse to pair on different fingerprints.

    schema = 1
    name = "little-big"

    [input]
    height = 28
    width = 28
    colour = "gray"          # gray | rgb | bgr
    layout = "nchw"          # nchw | nhwc
    scale = 0.00392156862745098
    mean = [0.1307]
    std = [0.3081]

    [labels]
    names = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

    [wire]
    activation = "f16"       # raw | f16 | i8: how carried tensors travel
    frame = "raw"            # raw | jpeg: how frames travel
    frame_size = "model"     # model (resized to [input]) | full (the camera frame)

    [[stage]]
    name = "little"
    model = "little.onnx"
    where = "edge"           # edge | cloud; edge stages are a prefix
    input = "frame"          # frame | carry (the previous stage's carry tensor)
    scores = "logits"        # output holding class scores
    [stage.gate]
    kind = "margin"          # margin | maxprob | entropy | dgate | support
    threshold = 0.62

    [[stage]]
    name = "big"
    model = "big.onnx"
    where = "cloud"
    input = "frame"
    combine = "weighted"     # replace | average | weighted (jetsplit/combine.py)
    combine_weight = 0.7     # weighted: this stage's share of the log-linear pool

    [files]
    "little.onnx" = "9f2c..."
    "big.onnx" = "41ab..."
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jetsplit.bundle_files import companions, copy_file, file_sha256
from jetsplit.combine import COMBINES
from jetsplit.demo import resolve_bundle_path
from jetsplit.errors import BundleError
from jetsplit.manifest import TableReader, dump_toml, read_toml
from jetsplit.preprocess import Preprocess

__all__ = [
    "GATE_KINDS",
    "MANIFEST",
    "SCHEMA_VERSION",
    "Bundle",
    "GateSpec",
    "StageSpec",
    "WireSpec",
    "file_sha256",
    "load_bundle",
    "write_bundle",
]

MANIFEST = "bundle.toml"
SCHEMA_VERSION = 1
GATE_KINDS = ("margin", "maxprob", "entropy", "dgate", "support")
_LEARNED = ("dgate", "support")


@dataclass(frozen=True)
class GateSpec:
    """A gate after a stage: accept iff ``score >= threshold``.

    ``curve_threshold`` / ``curve_continue`` optionally hold the calibrated
    threshold -> fraction-continuing curve that the edge's budget controller uses
    as feed-forward.
    """

    kind: str
    threshold: float
    params: str | None = None
    curve_threshold: tuple[float, ...] = ()
    curve_continue: tuple[float, ...] = ()


@dataclass(frozen=True)
class StageSpec:
    name: str
    model: str
    where: str = "edge"
    input: str = "frame"
    input_tensor: str | None = None
    scores: str = "logits"
    scores_kind: str = "logits"
    carry: str | None = None
    features: str | None = None
    combine: str = "replace"
    combine_weight: float = 1.0  # weight of this stage's own log-probabilities (combine = "weighted")
    flops: int | None = None
    gate: GateSpec | None = None


@dataclass(frozen=True)
class WireSpec:
    """How hand-offs travel. ``frame_size``: ``"model"`` ships a frame resized to
    the model's input (uint8, camera colour order), ``"full"`` the whole camera
    frame (for a cloud stage that needs more than the model's input)."""

    activation: str = "f16"
    frame: str = "raw"
    compression: str = "none"
    frame_size: str = "model"


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle. ``root`` is its directory."""

    root: Path
    name: str
    preprocess: Preprocess
    labels: tuple[str, ...]
    stages: tuple[StageSpec, ...]
    wire: WireSpec
    files: dict[str, str]
    fingerprint: str
    description: str = ""
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def path(self, name: str) -> Path:
        return self.root / name

    def edge_stages(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.stages) if s.where == "edge")

    def first_cloud_stage(self) -> int | None:
        for i, s in enumerate(self.stages):
            if s.where == "cloud":
                return i
        return None

    def thresholds(self) -> tuple[float | None, ...]:
        return tuple(s.gate.threshold if s.gate else None for s in self.stages)

    def with_thresholds(self, thresholds: Sequence[float | None]) -> Bundle:
        """The same bundle with new gate thresholds (fingerprint not recomputed:
        write it with :func:`write_bundle` to get a deployable one)."""
        stages = []
        for spec, thr in zip(self.stages, thresholds):
            if spec.gate is not None and thr is not None:
                spec = replace(spec, gate=replace(spec.gate, threshold=float(thr)))
            stages.append(spec)
        return replace(self, stages=tuple(stages))


def fingerprint_of(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def load_bundle(spec: str | Path, verify_files: bool = True) -> Bundle:
    """Load and verify a bundle directory (or ``demo:NAME``)."""
    root = resolve_bundle_path(spec)
    if not root.is_dir():
        raise BundleError(f"bundle {str(spec)!r}: no such directory")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"bundle {str(spec)!r}: no {MANIFEST} in {root}")
    raw = read_toml(manifest_path, BundleError)
    bundle = _parse(root, raw)
    if verify_files:
        _verify_files(bundle)
    return bundle


def _parse(root: Path, raw: dict[str, Any]) -> Bundle:
    top = TableReader(raw, MANIFEST, BundleError)
    schema = top.integer("schema")
    if schema != SCHEMA_VERSION:
        raise top.fail("schema", f"{SCHEMA_VERSION} (this jetsplit's bundle schema)", schema)
    name = top.text("name")
    description = top.text("description", "")
    precision = top.text("precision", "fp32", choices=("fp32", "fp16", "int8"))
    _ = top.text("mode", "custom")
    preprocess = _parse_input(top.table("input"))
    labels = _parse_labels(top.table("labels"))
    wire = _parse_wire(top.table("wire", {}))
    stages = tuple(_parse_stage(t, i) for i, t in enumerate(top.tables("stage")))
    files = _parse_files(top.table("files"))
    extra = top.table("meta", {})
    top.done()
    _check_chain(stages, files)
    return Bundle(
        root=root,
        name=name,
        preprocess=preprocess,
        labels=labels,
        stages=stages,
        wire=wire,
        files=files,
        fingerprint=fingerprint_of(raw),
        description=description,
        precision=precision,
        extra=dict(extra),
    )


def _parse_input(table: dict[str, Any]) -> Preprocess:
    r = TableReader(table, "[input]", BundleError)
    pre = Preprocess(
        height=r.integer("height", minimum=1),
        width=r.integer("width", minimum=1),
        colour=r.text("colour", "rgb", choices=("gray", "rgb", "bgr")),
        layout=r.text("layout", "nchw", choices=("nchw", "nhwc")),
        dtype=r.text("dtype", "float32", choices=("float32", "float16", "uint8")),
        scale=r.number("scale", 1.0 / 255.0),
        mean=r.numbers("mean", (0.0,)),
        std=r.numbers("std", (1.0,)),
        interpolation=r.text("interpolation", "area", choices=("area", "linear", "nearest", "cubic")),
    )
    r.done()
    return pre


def _parse_labels(table: dict[str, Any]) -> tuple[str, ...]:
    r = TableReader(table, "[labels]", BundleError)
    names: tuple[str, ...] = r.texts("names")
    r.done()
    if len(names) < 2:
        raise BundleError(f"[labels].names: expected at least 2 class names, got {len(names)}")
    return names


def _parse_wire(table: dict[str, Any]) -> WireSpec:
    r = TableReader(table, "[wire]", BundleError)
    wire = WireSpec(
        activation=r.text("activation", "f16", choices=("raw", "f16", "i8")),
        frame=r.text("frame", "raw", choices=("raw", "jpeg")),
        compression=r.text("compression", "none", choices=("none", "lz4", "zstd")),
        frame_size=r.text("frame_size", "model", choices=("model", "full")),
    )
    r.done()
    return wire


def _parse_stage(table: dict[str, Any], index: int) -> StageSpec:
    r = TableReader(table, f"[[stage]] #{index}", BundleError)
    name = r.text("name")
    r.where = f"[[stage]] {name!r}"
    spec = StageSpec(
        name=name,
        model=r.text("model"),
        where=r.text("where", "edge", choices=("edge", "cloud")),
        input=r.text("input", "frame", choices=("frame", "carry")),
        input_tensor=r.text("input_tensor", None),
        scores=r.text("scores", "logits"),
        scores_kind=r.text("scores_kind", "logits", choices=("logits", "probs")),
        carry=r.text("carry", None),
        features=r.text("features", None),
        combine=r.text("combine", "replace", choices=COMBINES),
        combine_weight=r.number("combine_weight", 1.0),
        flops=r.integer("flops", None, minimum=0),
        gate=_parse_gate(r.table("gate", None), name),
    )
    if not 0.0 <= spec.combine_weight <= 1.0:
        raise BundleError(f"[[stage]] {name!r}.combine_weight: expected a number in 0..1, got {spec.combine_weight}")
    if "combine_weight" in table and spec.combine != "weighted":
        raise BundleError(f"[[stage]] {name!r}.combine_weight: only with combine = \"weighted\", "
                          f"got combine = {spec.combine!r}")
    r.done()
    return spec


def _parse_gate(table: dict[str, Any] | None, stage: str) -> GateSpec | None:
    if table is None:
        return None
    r = TableReader(table, f"[[stage]] {stage!r} gate", BundleError)
    kind = r.text("kind", choices=GATE_KINDS)
    gate = GateSpec(
        kind=kind,
        threshold=r.number("threshold"),
        params=r.text("params", None),
        curve_threshold=r.numbers("curve_threshold", ()),
        curve_continue=r.numbers("curve_continue", ()),
    )
    r.done()
    if kind in _LEARNED and gate.params is None:
        raise BundleError(f"[[stage]] {stage!r} gate.params: a {kind} gate needs a parameter file, got none")
    if len(gate.curve_threshold) != len(gate.curve_continue):
        raise BundleError(
            f"[[stage]] {stage!r} gate: curve_threshold and curve_continue differ in length "
            f"({len(gate.curve_threshold)} vs {len(gate.curve_continue)})"
        )
    return gate


def _parse_files(table: dict[str, Any]) -> dict[str, str]:
    files: dict[str, str] = {}
    for name, digest in table.items():
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise BundleError(f"[files].{name}: expected a lowercase hex SHA-256, got {digest!r}")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"[files].{name}: expected a path inside the bundle, got {name!r}")
        files[name] = digest
    return files


def _check_chain(stages: tuple[StageSpec, ...], files: dict[str, str]) -> None:
    seen_cloud = False
    names = set()
    for i, s in enumerate(stages):
        where = f"[[stage]] {s.name!r}"
        if s.name in names:
            raise BundleError(f"{where}.name: expected a unique stage name, got a duplicate {s.name!r}")
        names.add(s.name)
        if s.where == "cloud":
            seen_cloud = True
        elif seen_cloud:
            raise BundleError(f"{where}.where: expected 'cloud' (edge stages must be a prefix), got 'edge'")
        if s.input == "carry":
            prev = stages[i - 1] if i > 0 else None
            if prev is None or prev.carry is None:
                raise BundleError(
                    f"{where}.input: 'carry' needs the previous stage to name a carry tensor, "
                    f"got {'no previous stage' if prev is None else 'carry unset on ' + repr(prev.name)}"
                )
        last = i == len(stages) - 1
        if s.gate is None and not last:
            raise BundleError(f"{where}.gate: every stage but the last needs a gate, got none")
        for ref in (s.model, s.gate.params if s.gate else None):
            if ref is not None and ref not in files:
                raise BundleError(f"{where}: file {ref!r} is not listed in [files] (listed: {sorted(files)})")
        if s.gate and s.gate.kind in _LEARNED and s.gate.kind == "dgate" and s.features is None:
            raise BundleError(f"{where}.features: a dgate needs the stage's features tensor, got none")


def _verify_files(bundle: Bundle) -> None:
    for name, expected in bundle.files.items():
        path = bundle.root / name
        if not path.is_file():
            raise BundleError(f"bundle {bundle.name!r}: file {name!r} is missing from {bundle.root}")
        actual = file_sha256(path)
        if actual != expected:
            raise BundleError(
                f"bundle {bundle.name!r}: file {name!r} changed after hashing "
                f"(sha256 expected {expected[:16]}..., actual {actual[:16]}...)"
            )


def write_bundle(
    out_dir: Path,
    manifest: dict[str, Any],
    sources: dict[str, Path] | None = None,
) -> Bundle:
    """Write a bundle: copy ``sources`` (bundle-relative name -> file) into
    ``out_dir``, hash every file the manifest uses, write ``bundle.toml`` and load
    it back (so whatever is written has passed the same validation a reader
    applies). A model's external-data files come along (from beside its source)
    and are hashed like every other file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sources or {}
    for name, src in sources.items():
        copy_file(src, out_dir / name)
    body = {k: v for k, v in manifest.items() if k != "files"}
    used: list[str] = []
    for stage in body.get("stage", []):
        used.append(stage["model"])
        used += companions(out_dir, stage["model"], sources.get(stage["model"]), used)
        gate = stage.get("gate")
        if gate and gate.get("params"):
            used.append(gate["params"])
    body["files"] = {name: file_sha256(out_dir / name) for name in dict.fromkeys(used)}
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(dump_toml(body))
    os.replace(tmp, out_dir / MANIFEST)
    return load_bundle(out_dir)

