"""Pieces every optimize report shares: quality and machine lines, the HTML page around a
report's body, and writing the three files."""

from __future__ import annotations

import html
from pathlib import Path

from wattwise.paths import atomic_write_text

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f0f0f0}.partial{background:#ffe08a;padding:8px;font-weight:bold}
img{max-width:100%;display:block;margin:1em 0}pre{white-space:pre-wrap;font-size:12px}"""


def quality_text(quality: dict[str, float]) -> str:
    """Metrics as "name value, ..." (4 decimals)."""
    return ", ".join(f"{k} {v:.4f}" for k, v in quality.items())


def machine_lines(machine) -> list[str]:
    """The report's "Machine" section (a MachineInfo), as Markdown lines."""
    m = machine
    return [
        "",
        "## Machine",
        "",
        f"- CPU: {m.cpu_model}, {m.logical_cores} logical cores, ISA: "
        f"{', '.join(m.isa_flags) or 'none of the tracked flags'}"
        f"{'' if m.has_int8_dot_product else ' (no VNNI/AMX: int8 matmuls have no fast path)'}",
        f"- GPU: {m.gpu}",
        f"- Python {m.python} on {m.platform}",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()),
        *([f"- Memory allocator: {m.allocator}"] if m.allocator else []),
    ]


def probe_lines(priors: dict) -> list[str]:
    """The report's "Hardware probe" section (a Priors as a dict), as Markdown lines."""
    parts = []
    if priors.get("ratios"):
        layer = f"One Linear of the model's dominant shape (rows × in × out = {priors['shape']}"
        share = priors.get("linear_share", 1.0)
        parts.append(_ratio_lines(f"{layer}, {share:.0%} of the FLOPs)", priors["ratios"]))
    if priors.get("conv_ratios"):
        layer = f"Its dominant convolution ({priors['conv_shape']}, convolutions"
        share = priors["conv_share"]
        parts.append(_ratio_lines(f"{layer} {share:.0%} of the FLOPs)", priors["conv_ratios"]))
    if not parts:
        return []
    took = f"The probe took {priors.get('seconds', 0.0):.1f} s; these measured ratios, weighted "
    took += "by those shares, ordered the candidates."
    return ["", "## Hardware probe", "", *[line for part in parts for line in part], took]


def _ratio_lines(what: str, ratios: dict[str, float]) -> list[str]:
    timed = f"{what}, {len(ratios)} compute paths timed against fp32 eager:"
    return [timed, "", ", ".join(f"{path} {ratio:.2f}x" for path, ratio in ratios.items()), ""]


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as lines ("|" inside a cell becomes "/")."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]


def html_table(headers: list[str], rows: list[list[str]]) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(title: str, partial_reason: str, headline: str, body: str, markdown: str) -> str:
    """A self-contained page: the partial banner, the headline, `body` (HTML), and the
    Markdown review at the end."""
    banner = (
        f'<p class="partial">PARTIAL REPORT — {html.escape(partial_reason)}</p>'
        if partial_reason
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head>
<body>{banner}<h1>{html.escape(title)}</h1>
<p>{html.escape(headline)}</p>
{body}
<h2>Review summary</h2><pre>{html.escape(markdown)}</pre></body></html>
"""


def write_files(out: Path, data_json: str, markdown: str, page: str) -> Path:
    """report.json, report.md and index.html into `out`, each atomically; returns `out`."""
    out = Path(out)
    atomic_write_text(out / "report.json", data_json)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "index.html", page)
    return out


def markdown_heading(result, title: str, headline: str) -> list[str]:
    """A Markdown report's first lines: the partial banner (when `result.partial`), the title
    and the headline."""
    banner = [f"> **PARTIAL REPORT** — {result.stop_reason}", ""] if result.partial else []
    return [*banner, f"# {title}", "", headline, ""]
