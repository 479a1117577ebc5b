"""Prometheus text exposition (format 0.0.4) of what the ingress sees, without a client library.

The ingress is a single replica, so its counters are the service's counters. Requests the
Ray Serve proxy rejects itself (its queue in front of the ingress is full: 503) never reach the
ingress and are not counted here; `wattwise loadtest` counts them on the client side.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FILL_RATIO_BUCKETS = (0.125, 0.25, 0.5, 0.75, 1.0)
# A replica that sent no batch for this long is dropped from the per-replica gauges.
REPLICA_STALE_S = 30.0
# Paths (and gRPC methods) get their own label; anything else (probes, typos, scanners) is
# "other", so random URLs cannot grow the label set without bound.
KNOWN_PATHS = (
    "/v1/predict",
    "/v1/generate",
    "/v1/model",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/wattwise.v1.Wattwise/Predict",
    "/wattwise.v1.Wattwise/Model",
)


@dataclass
class Histogram:
    """Cumulative-bucket histogram, Prometheus style."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        running, out = 0, []
        for bound, bucket_count in zip(self.buckets, self.counts, strict=True):
            running += bucket_count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.total:.6g}")
        out.append(f"{name}_count {self.count}")
        return out


@dataclass
class ServeMetrics:
    """Counters and histograms the ingress updates on every request and batch."""

    responses_by_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    batch_fill: Histogram = field(default_factory=lambda: Histogram(FILL_RATIO_BUCKETS))
    retries: int = 0
    in_flight: int = 0
    generated_tokens: int = 0  # tokens streamed to /v1/generate clients
    drafted_tokens: int = 0  # tokens a served lookup draft proposed (`serve --draft`)
    accepted_draft_tokens: int = 0  # ... of which the model agreed with
    streams_cut: int = 0  # /v1/generate streams ended by an error event after their first token
    # (source, uncertainty %) → [joules, requests]: replicas on other nodes may measure
    # differently, and an estimate must never be summed into a measurement.
    energy_by_source: dict[tuple[str, float], list[float]] = field(default_factory=dict)
    # replica id → (resident bytes, queue length, monotonic time of its last batch).
    replicas: dict[str, tuple[int, int, float]] = field(default_factory=dict)

    def record_response(self, path: str, status: int, seconds: float) -> None:
        path = path if path in KNOWN_PATHS else "other"
        self.responses_by_status[(path, status)] += 1
        if path == "/v1/predict":
            self.latency.observe(seconds)

    def record_prediction(self, result: dict, max_batch_size: int) -> None:
        """A successful model call: its energy share and, once per batch, the batch's size."""
        key = (result["energy_source"], result["energy_uncertainty_pct"])
        totals = self.energy_by_source.setdefault(key, [0.0, 0])
        totals[0] += result["energy_j"]
        totals[1] += 1
        if result["batch_inputs"]:
            self.batch_size.observe(result["batch_inputs"])
            self.batch_fill.observe(result["batch_inputs"] / max_batch_size)
        replica = result.get("replica")
        if replica:
            seen = time.monotonic()
            self.replicas[replica["id"]] = (replica["rss_bytes"], replica["queue_length"], seen)

    def render(self, healthy_replicas: int, target_replicas: int) -> str:
        """The whole exposition text."""
        lines = [
            "# HELP wattwise_requests_total Responses of the ingress by path (HTTP) or method (gRPC) and status (gRPC as its HTTP equivalent).",
            "# TYPE wattwise_requests_total counter",
        ]
        for (path, status), count in sorted(self.responses_by_status.items()):
            lines.append(f'wattwise_requests_total{{path="{path}",status="{status}"}} {count}')
        lines += [
            "# HELP wattwise_request_latency_seconds POST /v1/predict latency inside the ingress.",
            "# TYPE wattwise_request_latency_seconds histogram",
            *self.latency.lines("wattwise_request_latency_seconds"),
            "# HELP wattwise_batch_size Inputs per model forward pass (@serve.batch).",
            "# TYPE wattwise_batch_size histogram",
            *self.batch_size.lines("wattwise_batch_size"),
            "# HELP wattwise_batch_fill_ratio Inputs per batch / max batch size.",
            "# TYPE wattwise_batch_fill_ratio histogram",
            *self.batch_fill.lines("wattwise_batch_fill_ratio"),
            "# HELP wattwise_replicas_healthy Model replicas running and passing health checks.",
            "# TYPE wattwise_replicas_healthy gauge",
            f"wattwise_replicas_healthy {healthy_replicas}",
            "# HELP wattwise_replicas_target Model replicas asked for.",
            "# TYPE wattwise_replicas_target gauge",
            f"wattwise_replicas_target {target_replicas}",
            "# HELP wattwise_requests_in_flight Predict requests inside the ingress now.",
            "# TYPE wattwise_requests_in_flight gauge",
            f"wattwise_requests_in_flight {self.in_flight}",
            "# HELP wattwise_retries_total Model calls retried on another replica.",
            "# TYPE wattwise_retries_total counter",
            f"wattwise_retries_total {self.retries}",
            "# HELP wattwise_generated_tokens_total Tokens streamed to /v1/generate clients.",
            "# TYPE wattwise_generated_tokens_total counter",
            f"wattwise_generated_tokens_total {self.generated_tokens}",
            "# HELP wattwise_drafted_tokens_total Tokens a served lookup draft proposed.",
            "# TYPE wattwise_drafted_tokens_total counter",
            f"wattwise_drafted_tokens_total {self.drafted_tokens}",
            "# HELP wattwise_accepted_draft_tokens_total Drafted tokens the model agreed with.",
            "# TYPE wattwise_accepted_draft_tokens_total counter",
            f"wattwise_accepted_draft_tokens_total {self.accepted_draft_tokens}",
            "# HELP wattwise_streams_cut_total Generation streams cut after their first token "
            "(replica died): each ended with an error event.",
            "# TYPE wattwise_streams_cut_total counter",
            f"wattwise_streams_cut_total {self.streams_cut}",
        ]
        lines += self._replica_lines()
        lines += [
            "# HELP wattwise_energy_joules_per_request Model energy per successful request, "
            "mean since start; kind=estimate means no hardware counter (see uncertainty_pct).",
            "# TYPE wattwise_energy_joules_per_request gauge",
        ]
        totals_lines = [
            "# HELP wattwise_energy_joules_total Model energy of all successful requests.",
            "# TYPE wattwise_energy_joules_total counter",
        ]
        for (source, uncertainty), (joules, requests) in sorted(self.energy_by_source.items()):
            kind = "estimate" if source == "estimate" else "measured"
            labels = f'source="{source}",kind="{kind}",uncertainty_pct="{uncertainty:g}"'
            lines.append(f"wattwise_energy_joules_per_request{{{labels}}} {joules / requests:.6g}")
            totals_lines.append(f"wattwise_energy_joules_total{{{labels}}} {joules:.6g}")
        lines += totals_lines
        return "\n".join(lines) + "\n"

    def _replica_lines(self) -> list[str]:
        """Per-replica gauges, as of each replica's last batch (gone after REPLICA_STALE_S)."""
        now = time.monotonic()
        live = {k: v for k, v in self.replicas.items() if now - v[2] <= REPLICA_STALE_S}
        self.replicas = live
        memory = [
            "# HELP wattwise_replica_resident_bytes Resident memory (RSS) of a model replica "
            "process at its last batch.",
            "# TYPE wattwise_replica_resident_bytes gauge",
        ]
        queue = [
            "# HELP wattwise_replica_queue_length Model calls waiting in or computing on a "
            "replica when its last batch started.",
            "# TYPE wattwise_replica_queue_length gauge",
        ]
        for replica, (rss_bytes, queue_length, _seen) in sorted(live.items()):
            memory.append(f'wattwise_replica_resident_bytes{{replica="{replica}"}} {rss_bytes}')
            queue.append(f'wattwise_replica_queue_length{{replica="{replica}"}} {queue_length}')
        return memory + queue
