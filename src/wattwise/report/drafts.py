"""The draft search's report (`optimize --objective tokens_per_s`): per candidate its tokens/s,
speed-up over the target alone with its 95% interval, acceptance rate, whether its greedy output
equalled the target's, compress seconds and the libraries it needs."""

from __future__ import annotations

from wattwise.report.sections import (
    html_page,
    html_table,
    machine_lines,
    markdown_heading,
    markdown_table,
    quality_text,
)
from wattwise.search.results import DraftSearchResult

HEADERS = [
    "candidate",
    "status",
    "tokens/s",
    "speed-up (95% interval)",
    "acceptance",
    "identical to target",
    "compress s",
    "distil steps",
    "quality (val)",
    "libraries",
    "notes",
]


def _number(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _rows(result: DraftSearchResult) -> list[list[str]]:
    rows = []
    for row, candidate in zip(result.table(), [result.baseline, *result.candidates], strict=True):
        speed = ""
        if row["speedup_low"] is not None:
            speed = f"{row['speedup']:.2f}x ({row['speedup_low']:.2f}–{row['speedup_high']:.2f})"
        elif row["speedup"] is not None:
            speed = f"{row['speedup']:.2f}x"
        identical = row["identical_to_target"]
        notes = [n for n in ("CHOSEN" if row["chosen"] else "", candidate.note) if n]
        if row["tokens_per_s_from"] == "median in the pairs":
            notes.append("tokens/s: its median as timed in the candidates' pairs")
        if candidate.status != "measured" and candidate.reason:
            notes.append(candidate.reason)
        elif candidate.status == "measured" and not candidate.within_budget:
            notes.append(f"breaks the budget {result.budget.text()}")
        rows.append(
            [
                row["label"],
                row["status"],
                _number(row["tokens_per_s"], 1),
                speed,
                _number(row["acceptance_rate"]),
                "" if identical is None else ("yes" if identical else "NO"),
                _number(row["compress_s"], 1),
                "" if row["distill_steps"] is None else str(row["distill_steps"]),
                quality_text(row["quality"]),
                " + ".join(["torch", *row["libraries"]]),
                "; ".join(notes),
            ]
        )
    return rows


def headline(result: DraftSearchResult) -> str:
    """One paragraph: what was chosen and how to use it, or why nothing was."""
    if result.chosen is None:
        return f"{result.outcome} (exit code 3). The candidates are listed below."
    if result.chosen.id == "original":
        return (
            f"{result.outcome} Every candidate was slower than the target alone, failed, broke "
            f"the budget or was not started (timed on {result.workload}). Use the model as it "
            f"is: {result.usage}."
        )
    timing = result.confirmation.get("timing") or {}
    figures = result.chosen.generation or {}
    acceptance = figures.get("acceptance_rate")
    acceptance_text = f", acceptance {_number(acceptance)}" if acceptance is not None else ""
    saved = f"Saved as {result.chosen_variant}; use it" if result.chosen_variant else "Use it"
    return (
        f"{result.outcome} Search figure {result.chosen.objective_display}{acceptance_text}; "
        f"held-out {timing.get('ratio', float('nan')):.2f}x "
        f"({result.confirmation.get('agreement', '')}). {saved}: {result.usage}."
    )


def markdown_report(result: DraftSearchResult) -> str:
    """The review: headline, how candidates were measured, the table, the held-out check."""
    lines = markdown_heading(
        result, f"wattwise optimize: {result.model}, drafts for tokens/s", headline(result)
    )
    lines += [
        f"Objective **tokens_per_s** at batch 1 on {result.device}; budget "
        f"`{result.budget.text()}` (it binds the int8 target only: a draft leaves greedy "
        f"output unchanged); seed {result.seed}; {result.elapsed_s:.0f} s of a "
        f"{result.time_limit_s:.0f} s limit. Timed on {result.workload}, each candidate in "
        "alternation with the target alone (speed-ups carry their 95% interval); every draft's "
        "greedy tokens were compared with the target's on every prompt.",
        "",
        "## Candidates",
        "",
        *markdown_table(HEADERS, _rows(result)),
    ]
    attempts = result.confirmation.get("attempts") or []
    if attempts:
        lines += ["", "## Held-out check (test prompts; variants reloaded from disk)", ""]
    for attempt in attempts:
        if "timing" not in attempt:
            why = attempt.get("skipped") or f"greedy output changed ({attempt.get('mismatch')})"
            lines.append(f"- {attempt.get('label', attempt['id'])}: {why}")
            continue
        timing = attempt["timing"]
        lines.append(
            f"- {attempt['label']}: {timing['ratio']:.2f}x ({timing['ratio_low']:.2f}–"
            f"{timing['ratio_high']:.2f}, {timing['pairs']} pairs), identical to the target: "
            f"{attempt['identical_to_target']}{' — ' + attempt['mismatch'] if attempt['mismatch'] else ''}"
            f" → {'holds' if attempt.get('met') else 'fails'}"
        )
    lines += machine_lines(result.machine)
    return "\n".join(lines) + "\n"


def html_report(result: DraftSearchResult) -> str:
    """Self-contained page: headline, the candidate table, the Markdown review."""
    return html_page(
        f"wattwise optimize: {result.model} (drafts for tokens/s)",
        result.stop_reason if result.partial else "",
        headline(result),
        "<h2>Candidates</h2>" + html_table(HEADERS, _rows(result)),
        markdown_report(result),
    )
