"""The sweep's plot: energy per inference against latency and against throughput."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from wattwise.sweep.run import SweepPoint, SweepResult


def _label(point: SweepPoint) -> str:
    parts = [f"bs{point.batch_size}"]
    if point.threads is not None:
        parts.append(f"{point.threads}t")
    if point.power_limit_w is not None:
        parts.append(f"{point.power_limit_w:g}W")
    return " ".join(parts)


def sweep_plot(result: SweepResult) -> bytes:
    """Two panels (energy/inference vs p50 latency, vs throughput), the pick starred; PNG."""
    import io

    estimate = result.energy_source == "estimate"
    unit = "mJ / inference" + (
        f" (estimated ±{result.energy_uncertainty_pct:.0f}%)" if estimate else ""
    )
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    for point in result.points:
        chosen = point is result.pick
        energy_mj = point.energy_j_per_inference * 1000
        for axes, x in ((left, point.latency_ms_p50), (right, point.throughput_per_s)):
            axes.scatter(x, energy_mj, marker="*" if chosen else "o", s=160 if chosen else 36,
                         c="#d62728" if chosen else "#1f77b4")  # fmt: skip
            axes.annotate(_label(point), (x, energy_mj), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")  # fmt: skip
            if estimate:
                band = energy_mj * min(result.energy_uncertainty_pct, 99) / 100
                axes.errorbar(x, energy_mj, yerr=band, fmt="none", ecolor="#bbbbbb", lw=0.8)
    left.set_xlabel("latency p50 per batch (ms)")
    right.set_xlabel("throughput (inferences / s)")
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_ylabel(unit)
        axes.grid(alpha=0.3)
    figure.suptitle(
        f"{result.model} on {result.device}: pick ★ under Zeus cost, η={result.eta:g} "
        f"({result.energy_source})"
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
