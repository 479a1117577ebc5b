"""Plots for the optimize report, as PNG bytes (matplotlib, Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

from wattwise.search.results import CandidateResult


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


PEER_COLOR, WITHIN_COLOR, OUTSIDE_COLOR, CHOSEN_COLOR = "#888888", "#1f77b4", "#d62728", "#2ca02c"
KEY_WIDTH_CHARS = 58


def point_ids(members: list[CandidateResult]) -> dict[str, str]:
    """Short ids drawn on the points: 0 for the original, then 1, 2, ... in search order."""
    ids, number = {}, 0
    for result in members:
        if result.id == "original":
            ids[result.id] = "0"
        else:
            number += 1
            ids[result.id] = str(number)
    return ids


# Offsets (points) tried in turn for a point's id, so ids of nearby points do not overlap.
LABEL_OFFSETS = [(5, 4), (5, -11), (-13, 4), (-13, -11), (5, 15), (-13, 15), (16, -4), (-24, -4)]
LABEL_CLEARANCE_PX = 13.0


def _place_ids(axes, points: list[tuple[float, float]], texts: list[str], bold: list[bool]):
    """Write each id next to its point at the first offset clear of ids already written
    (matplotlib has no label-repulsion of its own; adjustText would be one more dependency)."""
    axes.figure.canvas.draw()  # settle limits and scales before reading transforms
    to_pixels = axes.transData.transform
    scale = axes.figure.dpi / 72.0
    placed: list[tuple[float, float]] = []
    for point, text, heavy in zip(points, texts, bold, strict=True):
        x, y = to_pixels(point)
        # The chosen point's ring is ~11 points wide: its id goes outside the ring.
        offsets = [(dx * 2.0, dy * 1.8) for dx, dy in LABEL_OFFSETS] if heavy else LABEL_OFFSETS
        choice = offsets[0]
        for dx, dy in offsets:
            anchor = (x + dx * scale, y + dy * scale)
            if all(
                abs(anchor[0] - px) > LABEL_CLEARANCE_PX * scale
                or abs(anchor[1] - py) > LABEL_CLEARANCE_PX * scale * 0.8
                for px, py in placed
            ):
                choice = (dx, dy)
                break
        placed.append((x + choice[0] * scale, y + choice[1] * scale))
        axes.annotate(
            text,
            point,
            fontsize=8,
            fontweight="bold" if heavy else "normal",
            xytext=choice,
            textcoords="offset points",
            zorder=5,
        )


def _color(result: CandidateResult) -> str:
    if result.peer:
        return PEER_COLOR
    return WITHIN_COLOR if result.within_budget else OUTSIDE_COLOR


def _key_lines(members, ids, chosen_id) -> list[tuple[str, str, bool]]:
    """(text, color, bold) per candidate for the key beside the plot, long labels wrapped."""
    import textwrap

    lines = []
    for result in members:
        verdict = "" if result.within_budget or result.id == "original" else " [outside budget]"
        peer = f" [peer: {result.peer}]" if result.peer else ""
        chosen = result.id == chosen_id
        text = f"{result.label}{peer}{verdict}{' — CHOSEN' if chosen else ''}"
        wrapped = textwrap.wrap(text, KEY_WIDTH_CHARS) or [""]
        color = CHOSEN_COLOR if chosen else _color(result)
        lines.append((f"{ids[result.id]:>2}  {wrapped[0]}", color, chosen))
        lines += [(f"    {more}", color, chosen) for more in wrapped[1:]]
    return lines


def pareto_plot(*args, **kwargs) -> bytes:
    """`pareto_figure` as PNG bytes."""
    return _png(pareto_figure(*args, **kwargs))


def pareto_figure(
    members: list[CandidateResult],
    front_ids: list[str],
    quality_label: str,
    cost_label: str,
    quality_of,
    chosen_id: str | None,
    budget_line: float | None,
    budget_label: str = "budget",
):
    """Quality vs cost on a log cost axis: short ids on the points, a key mapping each id to
    its recipe, the Pareto front, the chosen point ringed and the budget line labelled."""
    ids = point_ids(members)
    key = _key_lines(members, ids, chosen_id)
    height = max(4.8, 0.2 * len(key) + 1.2)
    figure, (axes, key_axes) = plt.subplots(
        1, 2, figsize=(12.5, height), gridspec_kw={"width_ratios": [1.35, 1]}
    )
    costs = [r.cost for r in members if r.cost is not None]
    if costs and min(costs) > 0:
        axes.set_xscale("log")
        # Plain numbers at 1-2-5 steps read faster than powers of ten.
        axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    for result in members:
        marker = "s" if result.peer else ("*" if result.id == "original" else "o")
        point = (result.cost, quality_of(result))
        axes.scatter(
            *point,
            c=_color(result),
            marker=marker,
            s=70 if marker != "*" else 180,
            zorder=3,
            edgecolors="black",
            linewidths=0.5,
        )
    front = sorted((r for r in members if r.id in front_ids), key=lambda r: r.cost)
    if front:
        axes.plot(
            [r.cost for r in front],
            [quality_of(r) for r in front],
            "-",
            c=CHOSEN_COLOR,
            lw=1.2,
            alpha=0.7,
            label="Pareto front",
            zorder=2,
        )
    chosen = next((r for r in members if r.id == chosen_id), None)
    if chosen is not None:
        axes.scatter(
            chosen.cost,
            quality_of(chosen),
            s=420,
            facecolors="none",
            edgecolors=CHOSEN_COLOR,
            linewidths=2.2,
            label=f"chosen ({ids[chosen.id]})",
            zorder=4,
        )
    if budget_line is not None:
        axes.axhline(budget_line, color=OUTSIDE_COLOR, ls="--", lw=1, label=budget_label)
        axes.annotate(
            budget_label,
            (0.99, budget_line),
            xycoords=("axes fraction", "data"),
            xytext=(0, -4),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=8,
            color=OUTSIDE_COLOR,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
            zorder=6,
        )
    _place_ids(
        axes,
        [(r.cost, quality_of(r)) for r in members],
        [ids[r.id] for r in members],
        [r.id == chosen_id for r in members],
    )
    scale = " (log scale)" if axes.get_xscale() == "log" else ""
    axes.set_xlabel(f"{cost_label}{scale}, lower is better")
    axes.set_ylabel(f"{quality_label}, higher is better")
    axes.grid(alpha=0.3, which="both")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="best")
    axes.set_title(
        "Quality vs cost (★ original, ■ peers' defaults, red: outside budget)", fontsize=9
    )
    key_axes.axis("off")
    key_axes.set_title("key", fontsize=9, loc="left")
    step = 1.0 / max(len(key), 18)
    for row, (text, color, bold) in enumerate(key):
        key_axes.text(
            0.0,
            1.0 - (row + 0.5) * step,
            text,
            transform=key_axes.transAxes,
            fontsize=7.5,
            family="monospace",
            color=color,
            fontweight="bold" if bold else "normal",
            va="center",
        )
    figure.tight_layout()
    return figure


def bars_plot(members: list[CandidateResult], batch_size: int) -> bytes:
    """Bars of p50 latency, energy per 1k inferences and size for every measured candidate."""
    key = str(batch_size)
    labels = [r.label[:30] for r in members]
    latency = [r.profile["latency_ms"][key]["p50_ms"] for r in members]
    energy = [r.profile["energy_j_per_1k_by_batch"][key] for r in members]
    size = [r.profile["size_bytes"] / 1e6 for r in members]
    estimated = members and members[0].profile["energy_source"] == "estimate"
    figure, axes = plt.subplots(1, 3, figsize=(12, 0.35 * len(members) + 1.8), sharey=True)
    colors = ["#888888" if r.peer else "#1f77b4" for r in members]
    for ax, values, title in (
        (axes[0], latency, f"p50 latency, batch {batch_size} (ms)"),
        (axes[1], energy, "energy per 1k inferences (J)" + (" — estimated" if estimated else "")),
        (axes[2], size, "serialized size (MB)"),
    ):
        ax.barh(labels, values, color=colors)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].invert_yaxis()
    figure.tight_layout()
    return _png(figure)


def before_after_plot(before: dict, after: dict, batch_size: int) -> bytes:
    """Original vs chosen: throughput, latency, energy and size as ratios."""
    key = str(batch_size)
    names = ["throughput", "p50 latency", "energy / 1k", "size"]
    ratios = [
        after["throughput_per_s"][key] / before["throughput_per_s"][key],
        after["latency_ms"][key]["p50_ms"] / before["latency_ms"][key]["p50_ms"],
        after["energy_j_per_1k_by_batch"][key] / before["energy_j_per_1k_by_batch"][key],
        after["size_bytes"] / before["size_bytes"],
    ]
    figure, axes = plt.subplots(figsize=(6.5, 3.2))
    bars = axes.bar(names, ratios, color=["#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd"])
    axes.axhline(1.0, color="black", lw=1)
    for bar, ratio in zip(bars, ratios, strict=True):
        axes.annotate(
            f"{ratio:.2f}x",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes.set_ylabel("chosen ÷ original")
    axes.set_title(
        f"Chosen vs original at batch {batch_size} (throughput: higher is better)", fontsize=9
    )
    return _png(figure)
