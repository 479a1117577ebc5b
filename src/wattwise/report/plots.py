"""Plots for the optimize report, as PNG bytes (matplotlib, Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from wattwise.search.results import CandidateResult


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def pareto_plot(
    members: list[CandidateResult],
    front_ids: list[str],
    quality_label: str,
    cost_label: str,
    quality_of,
    chosen_id: str | None,
    budget_line: float | None,
) -> bytes:
    """Scatter of quality vs cost with the Pareto front drawn and the chosen point marked."""
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    for result in members:
        color = "#888888" if result.peer else ("#1f77b4" if result.within_budget else "#d62728")
        marker = "s" if result.peer else ("*" if result.id == "original" else "o")
        axes.scatter(
            result.cost,
            quality_of(result),
            c=color,
            marker=marker,
            s=60 if marker != "*" else 160,
            zorder=3,
            edgecolors="black",
            linewidths=0.5,
        )
        axes.annotate(
            result.label[:38],
            (result.cost, quality_of(result)),
            fontsize=6.5,
            xytext=(4, 3),
            textcoords="offset points",
        )
    front = [r for r in members if r.id in front_ids]
    front.sort(key=lambda r: r.cost)
    if front:
        axes.plot(
            [r.cost for r in front],
            [quality_of(r) for r in front],
            "-",
            c="#2ca02c",
            lw=1.5,
            label="Pareto front",
            zorder=2,
        )
    chosen = next((r for r in members if r.id == chosen_id), None)
    if chosen is not None:
        axes.scatter(
            chosen.cost,
            quality_of(chosen),
            s=320,
            facecolors="none",
            edgecolors="#2ca02c",
            linewidths=2,
            label="chosen",
            zorder=4,
        )
    if budget_line is not None:
        axes.axhline(budget_line, color="#d62728", ls="--", lw=1, label="budget")
    axes.set_xlabel(cost_label + " (lower is better)")
    axes.set_ylabel(quality_label)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    axes.set_title("Quality vs cost (squares: peers' defaults; red: outside budget)", fontsize=9)
    return _png(figure)


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
