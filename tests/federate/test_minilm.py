"""MiniLM fine-tuned on retrieval pairs across client processes, with int8 updates.

Slow: two client processes each load torch, Flower and MiniLM; the server embeds the 512 texts
of the test split to score recall@10 (~30 s); the whole test took ~2 minutes on a busy 2-core
machine (load average 6), about 80 CPU-seconds.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("flwr", reason="install federate-requirements.txt (make install does)")

import numpy as np

from wattwise.federate.runner import Hooks, run_federated
from wattwise.federate.settings import FederateSettings, parse_compression

pytestmark = pytest.mark.slow
MINILM_WEIGHTS = 22_713_216  # all-MiniLM-L6-v2's state_dict values


def test_minilm_federated_fine_tuning_reports_recall_and_int8_bytes(tmp_path):
    settings = FederateSettings(
        model="minilm",
        clients=2,
        rounds=1,
        min_clients=2,
        local_steps=2,
        batch_size=4,
        compression=parse_compression("int8"),
        out=tmp_path,
        join_timeout_s=240,
        round_timeout_s=300,  # no straggler here: only a bound on a hung client
    )
    hooks = Hooks(capture_upstream=True)
    result = run_federated(settings, hooks=hooks)
    assert result.metric == "recall@10"
    assert [r.round for r in result.rounds] == [1]
    for record in result.rounds:
        assert record.accepted == 2 and record.aggregated
        assert math.isfinite(record.accuracy) and 0 < record.accuracy <= 1
        assert all(c.train_loss > 0 and math.isfinite(c.train_loss) for c in record.clients)
        # int8 on the wire: each update about a quarter of the fp32 model, framing included
        assert record.wire_up_bytes > record.payload_up_bytes > 0
        assert record.wire_up_bytes < record.accepted * 4 * MINILM_WEIGHTS / 3.8
    # the clients' passages and queries stayed in their processes
    upstream = hooks.relay.captured_upstream()
    for part in sorted((tmp_path / "clients").glob("client-*.npz")):
        with np.load(part) as data:
            texts = [*data["passages"][:10].tolist(), *data["queries"][:10].tolist()]
        assert texts and not any(text.encode() in upstream for text in texts)
