"""Field traces: what the edge saw in the field, labelled by the cloud.

The edge agent (``field_trace = PATH``) writes one JSON line per frame whose
cloud answer it has: frames it offloaded and frames the shadow audit sent
(``kind`` ``offload`` or ``audit``). Each line holds the edge gate's score and
answer, the cloud's answer (the label) and a weight: offloaded frames stand for
themselves (1), audited ones for the ``1 / shadow_rate`` accepted frames they
were drawn from. The first line is a header naming the bundle, its stages and
the gate that decides edge or cloud.

``load_trace`` turns such a file into a :class:`~jetsplit.trace.Trace` that
``jetsplit tune`` searches like a calibration trace: each row is repeated by its
weight (fractional weights are rounded so the totals stay right), the label is
the cloud's answer, so "accuracy" is agreement with the cloud and the chain run
to its end is right by definition. Tune with ``--max-accuracy-drop PT``: the
least offload whose answers agree with the cloud within PT points.

Only the gate before the first cloud stage is re-tuned from the field: an
earlier edge exit's frames are audited when accepted, but the edge never runs
the later edge stages on them, so their scores there are unknown. A bundle with
more than one gated edge stage keeps its earlier thresholds.

With ``field_frames = true`` (and ``offload = "frames"``) the frames are also
written as PNGs in an ImageFolder layout (``DIR/<cloud label>/<source>-<frame>.png``),
so ``jetsplit collect --data folder:DIR`` can build a full trace from them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from jetsplit.bundle import Bundle
from jetsplit.errors import DataError
from jetsplit.trace import Trace

__all__ = ["FieldTraceWriter", "is_field_trace", "load_trace", "read_any_trace"]

_VERSION = 1


class FieldTraceWriter:
    """Appends field records as JSON lines (thread-safe, flushed per line so a
    daemon's trace survives a crash up to its last frame)."""

    def __init__(self, path: Path, bundle: Bundle, shadow_rate: float, frames_dir: Path | None = None) -> None:
        self.path = Path(path)
        first_cloud = bundle.first_cloud_stage()
        if first_cloud is None or first_cloud == 0:
            raise DataError(f"field trace: bundle {bundle.name!r} has no edge stage before a cloud stage")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[str] = open(self.path, "a", encoding="utf-8")
        except FileExistsError:
            raise DataError(f"field trace {str(self.path)!r}: cannot write: a parent of it is a file, "
                            "not a directory") from None
        except OSError as exc:
            raise DataError(f"field trace {str(self.path)!r}: cannot write: {exc.strerror or exc}") from None
        self.frames_dir = frames_dir
        self._lock = threading.Lock()
        self.records = 0
        header = {
            "v": _VERSION, "kind": "header", "bundle": bundle.name, "bundle_path": str(bundle.root),
            "fingerprint": bundle.fingerprint, "stages": [s.name for s in bundle.stages],
            "thresholds": list(bundle.thresholds()), "flops": [s.flops for s in bundle.stages],
            "gate_stage": first_cloud - 1, "first_cloud": first_cloud, "shadow_rate": shadow_rate,
            "labels": list(bundle.labels), "files": dict(bundle.files),
        }
        self._write(header)

    def record(self, kind: str, frame: int, source_id: str, score: float, edge_class: int, cloud_class: int,
               weight: float, edge_ms: float = 0.0, rtt_ms: float = 0.0, bytes_up: int = 0,
               truth: str | None = None, image: np.ndarray | None = None, label: str | None = None) -> None:
        rec: dict[str, Any] = {"kind": kind, "frame": frame, "source_id": source_id, "score": float(score),
                               "edge_class": int(edge_class), "cloud_class": int(cloud_class),
                               "weight": float(weight), "edge_ms": float(edge_ms), "rtt_ms": float(rtt_ms),
                               "bytes_up": int(bytes_up), "truth": truth}
        if image is not None and self.frames_dir is not None and label is not None:
            rec["image"] = self._save_image(image, label, source_id, frame)
        self._write(rec)
        self.records += 1

    def _save_image(self, image: np.ndarray, label: str, source_id: str, frame: int) -> str:
        import cv2

        assert self.frames_dir is not None
        folder = self.frames_dir / label
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in source_id) or "source"
        path = folder / f"{safe}-{frame:08d}.png"
        cv2.imwrite(str(path), image)
        return str(path)

    def _write(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def is_field_trace(path: Path) -> bool:
    """True when ``path`` starts like a field trace (JSON lines), not an npz."""
    try:
        with open(path, "rb") as fh:
            return fh.read(1) == b"{"
    except OSError:
        return False


def _read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"field trace {str(path)!r}: cannot read: {exc.strerror or exc}") from None
    header: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"field trace {str(path)!r} line {no}: not JSON ({exc.msg})") from None
        if rec.get("kind") == "header":
            if header is not None and header.get("fingerprint") != rec.get("fingerprint"):
                raise DataError(f"field trace {str(path)!r} line {no}: a second bundle "
                                f"({rec.get('bundle')!r}) in one trace; keep one trace per bundle")
            header = rec
        else:
            records.append(rec)
    if header is None or header.get("v") != _VERSION:
        raise DataError(f"field trace {str(path)!r}: no version-{_VERSION} header line")
    if not records:
        raise DataError(f"field trace {str(path)!r}: no offloaded or audited frames recorded")
    return header, records


def _repeats(weights: Sequence[float]) -> np.ndarray:
    """Integer repeat counts whose running total follows the weights' (error
    diffusion), so 1/R-weighted audits count as often as they should."""
    out = np.zeros(len(weights), np.int64)
    carry = 0.0
    for i, w in enumerate(weights):
        carry += max(float(w), 0.0)
        out[i] = int(carry + 1e-9)
        carry -= out[i]
    return out


def load_trace(path: Path) -> Trace:
    """A field trace (JSON lines) as a :class:`Trace` labelled by the cloud."""
    header, records = _read(path)
    try:
        stages = tuple(str(s) for s in header["stages"])
        g, fc = int(header["gate_stage"]), int(header["first_cloud"])
        thresholds = tuple(None if t is None else float(t) for t in header["thresholds"])
        flops = tuple(header["flops"])
        reps = _repeats([float(r["weight"]) for r in records])
        rows = np.repeat(np.arange(len(records)), reps)
        score_g = np.array([float(r["score"]) for r in records], np.float32)[rows]
        edge = np.array([int(r["edge_class"]) for r in records], np.int64)[rows]
        cloud = np.array([int(r["cloud_class"]) for r in records], np.int64)[rows]
        edge_ms = np.array([float(r.get("edge_ms", 0.0)) for r in records])[rows]
        rtt = np.array([float(r.get("rtt_ms", 0.0)) for r in records])[rows]
        sent = np.array([float(r.get("bytes_up", 0)) for r in records])[rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"field trace {str(path)!r}: malformed record ({exc})") from None
    n, s_count = len(rows), len(stages)
    if not 0 <= g < fc < s_count:
        raise DataError(f"field trace {str(path)!r}: gate stage {g} and first cloud stage {fc} do not fit {s_count} stages")
    # Stages before the gate never decide here (their frames are not in the
    # field trace unless audited, and then only at their own exit): -inf scores
    # keep them passing; cloud stages after the first all answer the cloud's way.
    score = np.full((n, s_count), -np.inf, np.float32)
    score[:, g] = score_g
    pred = np.empty((n, s_count), np.int64)
    pred[:, :fc] = edge[:, None]
    pred[:, fc:] = cloud[:, None]
    time_ms = np.zeros((n, s_count))
    time_ms[:, g] = edge_ms
    time_ms[:, fc] = rtt
    bytes_up = np.zeros((n, s_count))
    bytes_up[:, fc] = sent
    kept = tuple(t if i >= fc - 1 else None for i, t in enumerate(thresholds))
    kinds = [str(r.get("kind")) for r in records]
    meta: dict[str, object] = {
        "bundle": header.get("bundle"), "bundle_path": header.get("bundle_path"),
        "fingerprint": header.get("fingerprint"), "files": header.get("files", {}),
        "data": f"field:{path}", "split": "field", "field": True,
        "field_records": {"offload": kinds.count("offload"), "audit": kinds.count("audit")},
        "shadow_rate": header.get("shadow_rate"),
    }
    return Trace(stage_names=stages, labels=cloud, score=score, pred=pred, own_pred=pred.copy(), time_ms=time_ms,
                 bytes_up=bytes_up, energy_mj=np.zeros((n, s_count)), flops=flops, thresholds=kept, meta=meta)


def read_any_trace(path: Path) -> Trace:
    """A calibration trace (``jetsplit collect``'s npz) or a field trace."""
    return load_trace(path) if is_field_trace(path) else Trace.load(path)
