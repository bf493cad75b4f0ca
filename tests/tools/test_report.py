"""``jetsplit report``: a tuned tiny bundle's report as real HTML (header cells, no
Markdown left in it, the plots embedded), read by a person's browser: headless
Chromium renders it, the screenshot shows the page and its plots, and the page
logs no error. Also the same report as Markdown, and the plots ``tune`` draws."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from jetsplit.cli import main as jetsplit
from tests.support.browser import chromium, render


class _Page(HTMLParser):
    """The tags and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "script")

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.text.append(data.strip())

    def count(self, tag: str) -> int:
        return sum(t == tag for t, _ in self.tags)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny little-big bundle, its calib and test traces on real digits, tuned."""
    from tests.support.tiny import tiny_bundle

    root = tmp_path_factory.mktemp("report")
    bundle = tiny_bundle(root / "bundle", "little-big").root
    for split in ("calib", "test"):
        assert jetsplit(["collect", str(bundle), "--data", "digits", "--split", split,
                         "--out", str(root / f"{split}.npz"), "--no-progress"]) == 0
    assert jetsplit(["tune", str(root / "calib.npz"), "--test", str(root / "test.npz"), "--out", str(root / "tuned"),
                     "--plots", str(root / "plots")]) == 0
    return {"root": root, "tuned": root / "tuned", "test": root / "test.npz", "plots": root / "plots"}


def _report(tuned: dict[str, Path], name: str) -> Path:
    out = tuned["root"] / name
    assert jetsplit(["report", str(tuned["tuned"]), "--trace", str(tuned["test"]), "--out", str(out)]) == 0
    return out


def test_html_report_is_html(tuned: dict[str, Path]) -> None:
    page = _Page()
    page.feed(_report(tuned, "report.html").read_text())
    text = "\n".join(page.text)
    # No Markdown passed through: no list dashes, code ticks, table rules or image links.
    for md in ("`", "- fingerprint", "|---", "![", "**"):
        assert md not in text, f"Markdown {md!r} in the page text"
    tables = page.count("table")
    assert tables >= 5 and page.count("thead") == tables and page.count("th") >= 3 * tables
    assert ("code", {}) in page.tags and any("fingerprint" in t for t in page.text)
    images = [a for t, a in page.tags if t == "img"]
    assert len(images) == 2 and all(str(a["src"]).startswith("data:image/png;base64,") for a in images)
    assert all(a.get("alt") for a in images) and page.count("figcaption") == 2


def test_markdown_report_keeps_markdown(tuned: dict[str, Path]) -> None:
    text = _report(tuned, "report.md").read_text()
    assert "- fingerprint `" in text and "| stage | where |" in text and "---:|" in text
    assert "![" in text and (tuned["root"] / "report_files" / "test" / "margins.png").is_file()


def _colour_fraction(img: np.ndarray, bgr: tuple[int, int, int], tol: int = 60) -> float:
    return float((np.abs(img.astype(np.int32) - np.array(bgr)).max(axis=2) < tol).mean())


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed: tests/support/browser_setup.sh "
                                                "(make unit) installs Debian's package; it could not here")
def test_html_report_renders_in_chromium(tuned: dict[str, Path], tmp_path: Path) -> None:
    # The detector itself: a page that does log errors is caught (a missing
    # image, console.error, an uncaught exception).
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><title>bad</title><img src="missing.png">'
                   '<script>console.error("boom"); notAFunction();</script>')
    caught = render(bad.as_uri()).errors
    assert len(caught) == 3 and any("missing.png" in e for e in caught), caught

    page = render(_report(tuned, "shown.html").as_uri())
    assert page.errors == [], page.errors
    shot = tmp_path / "report.png"
    shot.write_bytes(page.png)  # kept for a person to look at when the test fails
    img = cv2.imdecode(np.frombuffer(page.png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == 1200 and img.shape[0] > 1500, img.shape if img is not None else None
    # Not blank: text and table lines, and the plots' own colours (the histograms'
    # green and red, the Pareto front's blue) show the embedded images drew.
    assert (img < 200).any(axis=2).mean() > 0.02
    assert _colour_fraction(img, (120, 200, 130)) > 0.002  # right answers' green (BGR)
    assert _colour_fraction(img, (80, 80, 220)) > 0.0002  # wrong answers' red
    assert _colour_fraction(img, (180, 119, 31)) > 0.0002  # tab:blue front


def test_tune_plots_show_wrong_answers_and_the_oracle(tuned: dict[str, Path]) -> None:
    margins = cv2.imread(str(tuned["plots"] / "margins.png"))
    tradeoffs = cv2.imread(str(tuned["plots"] / "tradeoffs.png"))
    assert margins is not None and tradeoffs is not None
    # Wrong answers drawn next to the right ones: both colours in the histogram.
    assert _colour_fraction(margins, (80, 80, 220)) > 0.002 and _colour_fraction(margins, (120, 200, 130)) > 0.01
    # The oracle's line and marker (tab:purple) on the offload panel.
    assert _colour_fraction(tradeoffs, (189, 103, 148), tol=40) > 0.0002


def test_report_refuses_a_trace_of_another_bundle(tuned: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    from tests.support.traces import synthetic_trace

    other = tmp_path / "other.npz"
    synthetic_trace(50, 3).save(other)
    code = jetsplit(["report", str(tuned["tuned"]), "--trace", str(other), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and "has stages" in err and len(err.strip().splitlines()) == 1


def test_report_refuses_a_trace_of_other_models(tuned: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    from jetsplit.trace import Trace

    trace = Trace.load(tuned["test"])
    files = dict(trace.meta["files"])  # type: ignore[call-overload]
    files["little.onnx"] = "0" * 64  # as if collected on another little model
    Trace(**{**trace.__dict__, "meta": {**trace.meta, "files": files}}).save(tmp_path / "other.npz")
    code = jetsplit(["report", str(tuned["tuned"]), "--trace", str(tmp_path / "other.npz"),
                     "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and "other model files" in err and "little.onnx" in err
