"""`/metrics` is read by a real Prometheus-format parser (prometheus-client's), not by string
matching: every family, type and sample must survive it."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from wattwise.serve.metrics import REPLICA_STALE_S, ServeMetrics


def parse(text: str) -> dict:
    """Family name → (type, {(sample name, sorted labels): value})."""
    families = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        families[family.name] = (family.type, samples)
    return families


def _result(replica: str | None, batch_inputs: int, queue_length: int = 3) -> dict:
    stats = {"id": replica, "rss_bytes": 300_000_000, "queue_length": queue_length}
    return {
        "energy_j": 0.5,
        "energy_source": "estimate",
        "energy_uncertainty_pct": 60.0,
        "batch_inputs": batch_inputs,
        "batch_requests": batch_inputs,
        "replica": stats if replica else None,
    }


def test_prometheus_parser_reads_every_family_with_per_replica_gauges():
    metrics = ServeMetrics()
    metrics.record_response("/v1/predict", 200, 0.02)
    metrics.record_response("/v1/predict", 503, 0.001)
    metrics.record_prediction(_result("r1", 8, queue_length=5), 32)
    metrics.record_prediction(_result(None, 0), 32)
    metrics.record_prediction(_result("r2", 2, queue_length=1), 32)
    metrics.retries = 3
    families = parse(metrics.render(healthy_replicas=2, target_replicas=1))

    kind, samples = families["wattwise_requests"]
    assert kind == "counter"
    assert samples[("wattwise_requests_total", (("path", "/v1/predict"), ("status", "503")))] == 1
    kind, samples = families["wattwise_batch_size"]
    assert kind == "histogram"
    assert samples[("wattwise_batch_size_count", ())] == 2  # batches, not requests
    assert samples[("wattwise_batch_size_bucket", (("le", "8"),))] == 2
    assert families["wattwise_retries"][1][("wattwise_retries_total", ())] == 3
    kind, samples = families["wattwise_replica_queue_length"]
    assert kind == "gauge"
    assert samples[("wattwise_replica_queue_length", (("replica", "r1"),))] == 5
    assert samples[("wattwise_replica_queue_length", (("replica", "r2"),))] == 1
    memory = families["wattwise_replica_resident_bytes"][1]
    assert memory[("wattwise_replica_resident_bytes", (("replica", "r2"),))] == 300_000_000
    energy = families["wattwise_energy_joules_per_request"][1]
    labels = (("kind", "estimate"), ("source", "estimate"), ("uncertainty_pct", "60"))
    assert energy[("wattwise_energy_joules_per_request", labels)] == 0.5


def test_a_replica_silent_for_long_leaves_the_per_replica_gauges():
    metrics = ServeMetrics()
    metrics.record_prediction(_result("gone", 1), 32)
    rss, queue, _seen = metrics.replicas["gone"]
    metrics.replicas["gone"] = (rss, queue, time.monotonic() - REPLICA_STALE_S - 1)
    families = parse(metrics.render(1, 1))
    assert not families["wattwise_replica_resident_bytes"][1]


def test_grafana_dashboard_queries_only_metrics_the_server_exposes():
    import json
    import re
    from pathlib import Path

    dashboard = Path(__file__).parents[2] / "examples" / "grafana-wattwise-serve.json"
    exprs = [t["expr"] for p in json.loads(dashboard.read_text())["panels"] for t in p["targets"]]
    metrics = ServeMetrics()
    metrics.record_response("/v1/predict", 200, 0.02)
    metrics.record_prediction(_result("r1", 4), 32)
    exposed = {
        s.name for f in text_string_to_metric_families(metrics.render(1, 1)) for s in f.samples
    }
    used = {name for expr in exprs for name in re.findall(r"wattwise_[a-z_]+", expr)}
    assert used and used <= exposed, used - exposed
