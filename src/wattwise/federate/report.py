"""The federated run's HTML page: accuracy per round, bytes per round, energy per client, and
federated vs centralised on accuracy-for-energy. Plots are matplotlib PNGs embedded in the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from wattwise.federate.results import FederateResult
from wattwise.paths import atomic_write_text


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'


def _accuracy_plot(result: FederateResult) -> str:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rounds = [r.round for r in result.rounds]
    left.plot(rounds, [100 * r.accuracy for r in result.rounds], "o-", label="federated")
    left.set_xlabel("round")
    left.set_ylabel(f"test {result.metric}, %")
    left.set_title("global model on the held-out test split")
    cumulative, total = [], 0.0
    for r in result.rounds:
        total += r.client_energy_j + r.server_energy_j
        cumulative.append(total)
    right.plot(cumulative, [100 * r.accuracy for r in result.rounds], "o-", label="federated")
    if result.centralised:
        central = result.centralised
        spent, energy = 0.0, []
        for value in central.energy_j_per_epoch:
            spent += value
            energy.append(spent)
        right.plot(energy, [100 * a for a in central.accuracy_per_epoch], "s-", label="centralised")
        left.axhline(
            100 * max(central.accuracy_per_epoch), ls="--", c="gray", label="centralised best"
        )
    right.set_xlabel(f"cumulative energy, J ({result.energy_source})")
    right.set_ylabel(f"test {result.metric}, %")
    right.set_title(f"{result.metric} for energy spent")
    left.legend()
    right.legend()
    return _png(figure)


def _bytes_plot(result: FederateResult) -> str:
    figure, axes = plt.subplots(figsize=(11, 3.6))
    rounds = [r.round for r in result.rounds]
    width = 0.38
    up = [
        (r.wire_up_bytes if r.wire_up_bytes is not None else r.payload_up_bytes) / 1e6
        for r in result.rounds
    ]
    down = [
        (r.wire_down_bytes if r.wire_down_bytes is not None else r.payload_down_bytes) / 1e6
        for r in result.rounds
    ]
    axes.bar([x - width / 2 for x in rounds], up, width, label="up (clients → server)")
    axes.bar([x + width / 2 for x in rounds], down, width, label="down (server → clients)")
    axes.set_xlabel("round")
    axes.set_ylabel("MB")
    axes.set_title(f"bytes per round ({result.wire_source.split(':')[0]})")
    axes.legend()
    return _png(figure)


def _energy_plot(result: FederateResult) -> str:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    rounds = [r.round for r in result.rounds]
    left.bar(rounds, [r.client_energy_j for r in result.rounds], label="clients")
    left.bar(
        rounds,
        [r.server_energy_j for r in result.rounds],
        bottom=[r.client_energy_j for r in result.rounds],
        label="server",
    )
    left.set_xlabel("round")
    left.set_ylabel(f"energy, J ({result.energy_source})")
    left.legend()
    clients = sorted(result.per_client_energy_j, key=int)
    right.bar(clients, [result.per_client_energy_j[c] for c in clients])
    right.set_xlabel("client (partition)")
    right.set_ylabel("energy over the run, J")
    return _png(figure)


def headline(result: FederateResult) -> str:
    """One sentence a person reads first."""
    text = (
        f"{result.clients} clients, {result.partition}, {result.strategy}, updates "
        f"{result.compression}: test {result.metric} {100 * result.final_accuracy:.1f}% after "
        f"{len(result.rounds)} rounds; {result.total_up_bytes / 1e6:.2f} MB up; "
        f"{result.total_energy_j:.4g} J ({result.energy_source})."
    )
    if result.to_same_accuracy:
        same = result.to_same_accuracy
        text += (
            f" To {100 * same['target_accuracy']:.1f}%: federated "
            f"{same['federated']['energy_j']:.4g} J vs centralised "
            f"{same['centralised']['energy_j']:.4g} J."
        )
    return text


def write_report(result: FederateResult, out: Path) -> Path:
    """Write OUT/report.html and OUT/result.json (temp file then rename); return the HTML path."""
    out = Path(out)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                r.round,
                f"{100 * r.accuracy:.2f}",
                f"{r.selected}/{r.accepted}/{r.rejected}/{r.dropped}",
                r.wire_up_bytes if r.wire_up_bytes is not None else "n/a",
                r.wire_down_bytes if r.wire_down_bytes is not None else "n/a",
                r.payload_up_bytes,
                f"{r.client_energy_j:.3g}",
                f"{r.server_energy_j:.3g}",
                f"{r.duration_s:.2f}",
                "; ".join(r.rejections),
            )
        )
        + "</tr>"
        for r in result.rounds
    )
    headers = (
        "round", f"{result.metric} %", "selected/accepted/rejected/dropped", "wire up B", "wire down B",
        "payload up B", "client energy J", "server energy J", "seconds", "rejections",
    )  # fmt: skip
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wattwise federate: {html.escape(result.model)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
th{{background:#f0f0f0}}img{{max-width:100%;display:block;margin:1em 0}}</style></head>
<body><h1>wattwise federate: {html.escape(result.model)}</h1>
<p>{html.escape(headline(result))}</p>
<p>Bytes: {html.escape(result.wire_source)}. Energy: {html.escape(result.energy_method)}.</p>
<h2>Plots</h2>{_accuracy_plot(result)}{_bytes_plot(result)}{_energy_plot(result)}
<h2>Rounds</h2><table><tr>{"".join(f"<th>{h}</th>" for h in headers)}</tr>{rows}</table>
</body></html>
"""
    path = out / "report.html"
    atomic_write_text(path, page)
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=1, default=str))
    return path
