"""The profile as a text table: one row per option, the recommendation marked.

Kept apart from :mod:`.profile` (measuring and choosing) so each module has one role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .profile import Option, Profile

__all__ = ["format_table"]


def format_table(profile: Profile) -> str:
    """The profile as a text table, the recommended option marked with ``*``."""
    link = profile.link
    lines = [
        f"model {profile.model}: full {profile.full_ms:.3f} ms per sample "
        f"(ONNX Runtime, {profile.threads} thread, median of {profile.runs})",
        f"link {link.bandwidth_mbps:g} Mbit/s, cloud {link.cloud_speedup:g}x faster than the edge, "
        f"activations sent as {link.wire} (all-on-cloud sends 8-bit pixels)"
        + ("; 'sent' measured on real activations" if profile.measured_wire else ""),
        "",
    ]
    header = [
        "",
        "#",
        "cut",
        "shape",
        "elements",
        "fp32",
        "f16",
        "i8",
        "sent",
        "edge ms",
        "share",
        "send ms",
        "cloud ms",
        "total ms",
    ]
    rows = []
    number = 0
    for opt in profile.options:
        if opt.kind == "edge":  # nothing crosses the link
            mark = "*" if opt is profile.recommended else ""
            zero = f"{0.0:.3f}"
            rows.append(
                [
                    mark,
                    "-",
                    opt.label,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    f"{opt.edge_ms:.3f}",
                    "100%",
                    zero,
                    zero,
                    f"{opt.total_ms:.3f}",
                ]
            )
            continue
        number += opt.kind == "cut"
        rows.append(
            [
                "*" if opt is profile.recommended else "",
                "-" if opt.kind != "cut" else str(number),
                opt.label,
                opt.shape,
                _count(opt.elements),
                _size(opt.bytes["fp32"]),
                _size(opt.bytes["f16"]),
                _size(opt.bytes["i8"]),
                _size(opt.send_bytes),
                f"{opt.edge_ms:.3f}",
                f"{opt.share:.0%}",
                f"{opt.send_ms:.3f}",
                f"{opt.cloud_ms:.3f}",
                f"{opt.total_ms:.3f}",
            ]
        )
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    # Text columns left-aligned, numbers right-aligned.
    left = {0, 2, 3}
    for row in [header, *rows]:
        cells = [
            row[c].ljust(widths[c]) if c in left else row[c].rjust(widths[c])
            for c in range(len(row))
        ]
        lines.append("  ".join(cells).rstrip())
    best = profile.recommended
    lines.append("")
    if profile.precisions:
        names = list(profile.precisions)
        lines.append("edge ms per precision (whole model first; '?' where the converter renamed the cut):")
        rows = [["cut", "fp32", *names]]
        rows.append(["(whole model)", f"{profile.full_ms:.3f}",
                     *[f"{profile.precisions[p]['full_ms']:.3f}" for p in names]])
        for opt in profile.options:
            if opt.kind == "cut":
                cells = [profile.precisions[p]["edge_ms"].get(opt.label) for p in names]
                rows.append([opt.label, f"{opt.edge_ms:.3f}", *["?" if c is None else f"{c:.3f}" for c in cells]])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
        lines.append("")
    if profile.alone_ms:
        by_label = {o.label: o for o in profile.options}
        checks = ", ".join(
            f"{label} {ms:.3f} ms (profile {by_label[label].edge_ms:.3f})"
            for label, ms in profile.alone_ms.items() if label in by_label
        )
        lines.append(f"check, heads timed in sessions of their own: {checks}")
    lines.append(f"recommended: {best.label}  ({best.total_ms:.3f} ms per frame; {_why(best)})")
    return "\n".join(lines)


# -- helpers -------------------------------------------------------------------


def _why(opt: Option) -> str:
    if opt.kind == "edge":
        return "the link is too slow for any cut to pay off"
    if opt.kind == "cloud":
        return "sending the input and computing in the cloud is fastest"
    return f"edge {opt.edge_ms:.3f} + send {opt.send_ms:.3f} + cloud {opt.cloud_ms:.3f} ms"


def _count(n: int | None) -> str:
    return "?" if n is None else str(n)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
