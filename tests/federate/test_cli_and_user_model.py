"""The federate commands' errors, and a user's module:factory model with its own data file."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="install federate-requirements.txt (make install does)")

import numpy as np
from flwr.common import FitIns, ndarrays_to_parameters

from tests.cli.run_cli import assert_one_line_error, run_cli, run_in_process
from wattwise.federate.client import ClientSpec, WattwiseClient
from wattwise.federate.data import fresh_model, open_workload, write_client_parts
from wattwise.federate.settings import FederateSettings, Partition, parse_compression
from wattwise.federate.strategy import RoundBook, make_strategy
from wattwise.federate.training import model_arrays

FACTORY = """
from torch import nn

def build():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
"""


@pytest.mark.slow  # a CLI process (torch + Flower imports): over 20 s on a busy machine
def test_bad_partition_is_one_line_error():
    done = run_in_process("federate", "digits-cnn", "--partition", "zipf")
    assert_one_line_error(done, "--partition", "dirichlet:ALPHA")


@pytest.mark.slow
def test_client_without_a_server_gives_up_with_one_line(tmp_path):
    workload = open_workload("digits-cnn")
    part = write_client_parts(workload.task, 2, Partition("iid"), 0, tmp_path)[0]
    done = run_cli(
        "federate-client", "--server", "127.0.0.1:9", "--data", str(part), "--max-wait", "1"
    )
    assert_one_line_error(done, "no federate server answered at 127.0.0.1:9")


def test_a_user_factory_model_trains_on_its_own_data_file(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 16))
    labels = rng.integers(0, 3, 300)
    inputs = (centers[labels] + rng.normal(0, 1, (300, 16))).astype(np.float32)
    np.savez(tmp_path / "data.npz", inputs=inputs, labels=labels)
    workload = open_workload("user_models:build", tmp_path / "data.npz")
    parts = write_client_parts(workload.task, 3, Partition("dirichlet", 0.5), 0, tmp_path / "c")
    settings = FederateSettings(
        model="user_models:build", clients=3, compression=parse_compression("topk:0.5")
    )
    initial = model_arrays(fresh_model(workload.build, 0))
    strategy = make_strategy(settings, initial, RoundBook())
    strategy._global = initial
    config = {"round": 1, "seed": 0, "local_epochs": 3, "batch_size": 16, "learning_rate": 0.05}
    results = []
    for partition, path in enumerate(parts):
        spec = ClientSpec(partition, path, settings.model, settings.compression, tmp_path)
        res = WattwiseClient(spec).fit(FitIns(ndarrays_to_parameters(initial), config))
        assert res.metrics["energy_source"] in ("estimate", "rapl")
        results.append((partition, res))
    parameters, _ = strategy.aggregate_fit(1, results, [])
    assert parameters is not None
    assert (tmp_path / "client-0-residual.npz").is_file()  # top-k error feedback kept locally
