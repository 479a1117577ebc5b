"""Write the optimize report: report.json (everything), report.md (review), index.html."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from pathlib import Path
from typing import Any

from wattwise.compress.quantize_retry import LEFT_OUT_NOTE
from wattwise.measure.carbon import grams_at
from wattwise.report import drafts, plots
from wattwise.report.sections import (
    html_page,
    html_table,
    machine_lines,
    markdown_heading,
    markdown_table,
    probe_lines,
    quality_text,
    write_files,
)
from wattwise.search.pareto import quality_axis
from wattwise.search.results import CandidateResult, DraftSearchResult


def write_report(result, out: Path) -> Path:
    """Write all three files into `out` (each atomically); returns `out`. A draft search's
    result (`--objective tokens_per_s`) gets its own Markdown and page (`report.drafts`)."""
    data = dataclasses.asdict(result)
    # The budget and objective as the user wrote them; their parts stay beside them.
    data["budget"], data["budget_parts"] = result.budget.text(), data["budget"]
    data["objective"] = result.objective.name
    data["batch_size"] = result.batch_size
    data["exit_code"] = result.exit_code
    if isinstance(result, DraftSearchResult):
        data["table"] = result.table()
        writers = (drafts.markdown_report, drafts.html_report)
    else:
        writers = (markdown_report, html_report)
    as_json = json.dumps(data, indent=2, default=str)
    return write_files(out, as_json, writers[0](result), writers[1](result))


def _energy_label(profile: dict[str, Any]) -> str:
    if profile["energy_source"] == "estimate":
        return f"estimated ±{profile['energy_uncertainty_pct']:.0f}% ({profile['energy_method']})"
    return f"measured with {profile['energy_source']} ({profile['energy_method']})"


def headline(result) -> str:
    """One paragraph: chosen recipe, speed-up, quality, energy (or why nothing was chosen)."""
    if isinstance(result, DraftSearchResult):
        return drafts.headline(result)
    if result.chosen is None:
        return (
            f"No candidate met the budget {result.budget.text()} (exit code 3). "
            "The closest candidates are listed below."
        )
    key = str(result.batch_size)
    before, after = result.baseline_profile, result.chosen_profile
    if result.chosen.id == "original":
        return (
            f"{result.outcome} Every candidate was slower, broke the budget {result.budget.text()} "
            "or was not started; the original is kept as the chosen variant."
        )
    timing = result.confirmation.get("timing") or {}
    energy_ratio = before["energy_j_per_1k_by_batch"][key] / after["energy_j_per_1k_by_batch"][key]
    speed = (
        f"{timing['ratio']:.2f}x the original's throughput (95% interval "
        f"{timing['ratio_low']:.2f}–{timing['ratio_high']:.2f}, timed in alternation with it on "
        f"the held-out split; {result.confirmation.get('agreement', '')})"
        if timing
        else "speed not re-timed"
    )
    return (
        f"Chosen: {result.chosen.label}. At batch {result.batch_size}: {speed}. Test-split quality: {quality_text(after['quality'])} "
        f"(original {quality_text(before['quality'])}); budget {result.budget.text()} holds on the held-out "
        f"split. Energy per 1k inferences: {after['energy_j_per_1k_by_batch'][key]:.4g} J vs "
        f"{before['energy_j_per_1k_by_batch'][key]:.4g} J ({_times_less(energy_ratio)}), "
        f"{_energy_label(after)}. Size {_size_text(after['size_bytes'])} vs "
        f"{_size_text(before['size_bytes'])}."
    )


def _times_less(ratio: float) -> str:
    """'2.50x less' for a saving, '1.15x more' when the variant costs more (ratio < 1)."""
    return f"{ratio:.2f}x less" if ratio >= 1 else f"{1 / ratio:.2f}x more"


def _size_text(size_bytes: float) -> str:
    """Bytes as MB, or kB below 0.1 MB (a 20 kB model is not '0.00 MB')."""
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e5 else f"{size_bytes / 1e3:.1f} kB"


def _row(result, r: CandidateResult) -> list[str]:
    chosen = result.chosen is not None and r.id == result.chosen.id
    flags = []
    if r.peer:
        flags.append(f"peer: {r.peer}")
    if chosen:
        flags.append("CHOSEN")
    if r.id in result.front:
        flags.append("front")
    if r.slower_than_original:
        flags.append("slower than original")
    if r.note:
        flags.append(r.note)
    if r.libraries:
        flags.append("needs " + " + ".join(["torch", *r.libraries]))
    if r.prior is not None:
        flags.append(f"probe predicted {r.prior:.2f}x")
    if r.profile:
        flags += [n for n in r.profile.get("notes", []) if n.startswith(LEFT_OUT_NOTE)]
    if r.status != "measured":
        return [r.label, r.status, "", "", _speed(r), "", "", "; ".join([*flags, r.reason])]
    key = str(result.batch_size)
    energy = r.profile["energy_j_per_1k_by_batch"][key]
    return [
        r.label,
        "within budget" if r.within_budget else "breaks budget",
        quality_text(r.quality),
        f"{r.objective_display}",
        _speed(r),
        f"{energy:.4g}",
        f"{r.profile['size_bytes'] / 1e6:.2f}",
        "; ".join(flags),
    ]


def _speed(r: CandidateResult) -> str:
    if r.paired:
        return (
            f"{r.paired['ratio']:.2f}x ({r.paired['ratio_low']:.2f}–{r.paired['ratio_high']:.2f})"
        )
    return f"{r.speedup:.2f}x" if r.speedup else ""


HEADERS = [
    "candidate",
    "verdict",
    "quality (val)",
    "objective",
    "speed-up",
    "J / 1k",
    "MB",
    "notes",
]


def _members(result) -> list[CandidateResult]:
    measured = [r for r in result.candidates if r.status == "measured"]
    return ([result.baseline] if result.baseline.status == "measured" else []) + measured


def markdown_report(result) -> str:
    """A model-review summary: gains, trade-offs, energy and carbon, what was rejected and why."""
    lines = markdown_heading(result, f"wattwise optimize: {result.model}", headline(result))
    lines += [
        f"Budget `{result.budget.text()}`, objective **{result.objective.name}** at batch {result.batch_size} "
        f"on {result.device}; seed {result.seed}; {result.elapsed_s:.0f} s of a "
        f"{result.time_limit_s:.0f} s limit. Candidates were scored on the val split; the "
        "chosen one was re-scored on the test split, which the search never used. Speed was "
        f"timed on {result.workload or 'the fixed batch'}, each candidate in alternation with "
        "the original (speed-ups carry their 95% interval).",
        "",
    ]
    corpus = result.confirmation.get("corpus_timing")
    if corpus:
        lines += [
            f"On real corpus text ({corpus['workload']}): the chosen variant runs "
            f"{corpus['ratio']:.2f}x the original's texts/s "
            f"({corpus['ratio_low']:.2f}–{corpus['ratio_high']:.2f}, {corpus['pairs']} pairs, "
            "same batching for both).",
            "",
        ]
    if result.chosen_profile:
        p, b = result.chosen_profile, result.baseline_profile
        per_million = 1000.0
        lines += [
            "## Energy and carbon per 1M inferences",
            "",
            "| | energy (kJ) | carbon (gCO2e) | region | source |",
            "|---|---|---|---|---|",
        ]
        for name, prof in (("original", b), ("chosen", p)):
            key = str(result.batch_size)
            energy_kj = prof["energy_j_per_1k_by_batch"][key] * per_million / 1000
            carbon = grams_at(energy_kj * 1000, prof["carbon_intensity_g_per_kwh"])
            lines.append(
                f"| {name} | {energy_kj:.3g} | {carbon:.3g} | {prof['region']} "
                f"({prof['carbon_intensity_g_per_kwh']:.0f} g/kWh) | {_energy_label(prof)} |"
            )
        lines += ["", f"Carbon intensity: {p['carbon_source']}.", ""]
    rows = [_row(result, r) for r in [result.baseline, *result.candidates]]
    lines += ["## Candidates", "", *markdown_table(HEADERS, rows)]
    rejected = [
        r
        for r in result.candidates
        if r.status != "measured" or not result.chosen or r.id != result.chosen.id
    ]
    lines += ["", "## Tried and rejected", ""]
    for r in rejected:
        if r.status == "measured":
            why = (
                "breaks the budget"
                if not r.within_budget
                else "slower than the original"
                if r.slower_than_original
                else "costlier than the chosen one"
            )
            lines.append(
                f"- {r.label}: {why} ({r.objective_display}, {result.budget.metric}{'_drop' if result.budget.relative else ''} "
                f"= {r.budget_value:.4f})"
            )
        else:
            lines.append(f"- {r.label}: {r.status} — {r.reason}")
    if result.confirmation.get("attempts"):
        lines += ["", "## Held-out confirmation", ""]
        for attempt in result.confirmation["attempts"]:
            if "test_quality" not in attempt:
                lines.append(f"- {attempt['label']}: {attempt.get('skipped', 'not checked')}")
                continue
            lines.append(
                f"- {attempt['label']}: test {quality_text(attempt['test_quality'])} → "
                f"{'holds' if attempt['met'] else 'fails'} the budget"
            )
    lines += probe_lines(result.priors)
    lines += machine_lines(result.machine)
    if result.skipped_space:
        lines += ["", "Not in the space on this installation: " + "; ".join(result.skipped_space)]
    return "\n".join(lines) + "\n"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def html_report(result) -> str:
    """Self-contained HTML page: summary, candidate table, embedded PNG plots."""
    members = _members(result)
    budget = result.budget
    quality_of = lambda r: quality_axis(budget, r)  # noqa: E731
    # On the quality axis higher is better: a drop and a lower-is-better metric are negated.
    negated = budget.relative or not budget.higher_is_better
    budget_line = -budget.threshold if negated else budget.threshold
    images = []
    if members:
        images.append(
            _img(
                plots.pareto_plot(
                    members,
                    result.front,
                    f"{budget.metric}{' drop, negated' if budget.relative else ''}"
                    f"{' (negated)' if not budget.relative and not budget.higher_is_better else ''}",
                    f"{result.objective.name} cost, {result.objective.unit}",
                    quality_of,
                    result.chosen.id if result.chosen else None,
                    budget_line,
                    f"budget {budget.text()}",
                ),
                "Pareto front",
            )
        )
        images.append(_img(plots.bars_plot(members, result.batch_size), "latency, energy, size"))
    if result.chosen_profile:
        images.append(
            _img(
                plots.before_after_plot(
                    result.baseline_profile, result.chosen_profile, result.batch_size
                ),
                "before and after",
            )
        )
    table = html_table(HEADERS, [_row(result, r) for r in [result.baseline, *result.candidates]])
    body = "<h2>Plots</h2>" + "".join(images) + f"\n<h2>Candidates</h2>{table}"
    return html_page(
        f"wattwise optimize: {result.model}",
        result.stop_reason if result.partial else "",
        headline(result),
        body,
        markdown_report(result),
    )
