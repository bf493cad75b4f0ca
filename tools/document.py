"""A small document model for the reports, rendered as Markdown or as one HTML page.

The report is built once as blocks (headings, paragraphs, lists, tables,
figures, preformatted text) and rendered by either writer, so the HTML is real
HTML (header cells, code, figures with captions, embedded images) rather than
Markdown passed through, and both say the same thing.

Inline text is a ``str`` or a tuple of ``str`` and :class:`Code` parts.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Block", "Code", "Figure", "Heading", "Items", "Para", "Pre", "Table", "cell", "to_html", "to_markdown"]


@dataclass(frozen=True)
class Code:
    text: str


Inline = str | Code | tuple[str | Code, ...]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: Inline


@dataclass(frozen=True)
class Items:
    items: tuple[Inline, ...]


@dataclass(frozen=True)
class Table:
    """``numeric``: columns to align right (figures)."""

    head: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    numeric: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


@dataclass(frozen=True)
class Pre:
    text: str


Block = Heading | Para | Items | Table | Figure | Pre


def cell(v: Any) -> str:
    """A table value as text: ``-`` for None, 4 significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _parts(text: Inline) -> tuple[str | Code, ...]:
    return text if isinstance(text, tuple) else (text,)


def _md_inline(text: Inline) -> str:
    return "".join(f"`{p.text}`" if isinstance(p, Code) else p for p in _parts(text))


def _html_inline(text: Inline) -> str:
    return "".join(f"<code>{html.escape(p.text)}</code>" if isinstance(p, Code) else html.escape(p)
                   for p in _parts(text))


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    """Markdown; figures are linked relative to ``base`` (the report's folder)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [_md_inline(b.text), ""]
        elif isinstance(b, Items):
            out += [f"- {_md_inline(i)}" for i in b.items] + [""]
        elif isinstance(b, Table):
            out += ["| " + " | ".join(b.head) + " |",
                    "|" + "".join("---:|" if i in b.numeric else "---|" for i in range(len(b.head)))]
            out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in b.rows] + [""]
        elif isinstance(b, Figure):
            out += [f"![{b.caption}]({b.path.relative_to(base)})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Pre):
            out += ["```", b.text.rstrip("\n"), "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
     color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.2em}
h2{margin-top:2em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.8em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f5f5f5;padding:0 .25em;border-radius:3px;font-size:90%}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:85%}
figure{margin:1.2em 0}
figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:90%;margin-top:.3em}
"""


def _html_table(t: Table) -> str:
    def cls(i: int) -> str:
        return ' class="num"' if i in t.numeric else ""

    head = "".join(f'<th scope="col"{cls(i)}>{html.escape(h)}</th>' for i, h in enumerate(t.head))
    rows = "".join("<tr>" + "".join(f"<td{cls(i)}>{html.escape(cell(c))}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained HTML page: figures are embedded, so it travels as one file."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_html_inline(b.text)}</p>")
        elif isinstance(b, Items):
            body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            body.append(_html_table(b))
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                        f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, Pre):
            body.append(f"<pre>{html.escape(b.text)}</pre>")
    # An empty icon: a browser opening the file asks for none (no failed request).
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>\n{chr(10).join(body)}\n</body></html>\n")
