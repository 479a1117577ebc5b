"""Client data splits, and the server's guard against bad updates (real client, no network)."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="install federate-requirements.txt (make install does)")

import numpy as np
from flwr.common import Code, FitIns, FitRes, Status

from wattwise.errors import ConfigError
from wattwise.federate.client import ClientSpec, WattwiseClient
from wattwise.federate.data import fresh_model, open_workload, partition_indices, write_client_parts
from wattwise.federate.settings import (
    FederateSettings,
    Partition,
    parse_compression,
    parse_partition,
)
from wattwise.federate.strategy import RoundBook, make_strategy
from wattwise.federate.training import model_arrays


def test_partitions_cover_the_train_split_once_and_dirichlet_is_skewed():
    labels = np.repeat(np.arange(10), 100)
    for partition in (Partition("iid"), Partition("dirichlet", 0.3)):
        parts = partition_indices(labels, 10, partition, seed=0)
        joined = np.concatenate(parts)
        assert sorted(joined.tolist()) == list(range(len(labels)))
    iid = partition_indices(labels, 10, Partition("iid"), 0)
    skewed = partition_indices(labels, 10, Partition("dirichlet", 0.3), 0)

    def top_class_share(parts):
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])

    assert top_class_share(skewed) > 2 * top_class_share(iid)


def test_bad_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="dirichlet"):
        parse_partition("dirichlet:-1")
    with pytest.raises(ConfigError, match="topk"):
        parse_compression("topk:2")
    with pytest.raises(ConfigError, match="min-clients"):
        FederateSettings(clients=3, min_clients=5)
    for fault in ("die:0", "die:x", "die", "explode"):
        with pytest.raises(ConfigError, match="die:ROUND"):
            FederateSettings(clients=3, client_faults={1: fault})
    assert FederateSettings(clients=3, client_faults={1: "die:2"}).client_faults == {1: "die:2"}


def _answers(tmp_path, faults: dict[int, str]):
    workload = open_workload("digits-cnn")
    parts = write_client_parts(workload.task, 4, Partition("iid"), 0, tmp_path / "clients")
    settings = FederateSettings(clients=4, min_clients=2, compression=parse_compression("int8"))
    initial = model_arrays(fresh_model(workload.build, 0))
    book = RoundBook()
    strategy = make_strategy(settings, initial, book)
    from flwr.common import ndarrays_to_parameters

    parameters = ndarrays_to_parameters(initial)
    strategy._global = initial  # what configure_fit records before a round
    results = []
    for partition, path in enumerate(parts):
        spec = ClientSpec(
            partition,
            path,
            "digits-cnn",
            settings.compression,
            tmp_path,
            faults.get(partition, "none"),
        )
        config = {"round": 1, "seed": 0, "local_epochs": 1, "batch_size": 32, "learning_rate": 0.05}
        res = WattwiseClient(spec).fit(FitIns(parameters, config))
        results.append((f"proxy-{partition}", res))
    return strategy, book, results, initial


def test_malformed_and_non_finite_updates_are_rejected_and_never_averaged(tmp_path):
    strategy, book, results, _ = _answers(tmp_path, {1: "nan", 2: "garbage", 3: "shape"})
    parameters, _ = strategy.aggregate_fit(1, results, [])
    assert parameters is None  # one good update < min_clients 2: the round is skipped
    assert [c.accepted for c in sorted(book.clients, key=lambda c: c.partition)] == [
        True,
        False,
        False,
        False,
    ]
    assert any("NaN" in r for r in book.rejections)
    assert len(book.rejections) == 4  # three rejections and the skipped round


def test_a_rejected_update_does_not_move_the_average(tmp_path):
    from flwr.common import parameters_to_ndarrays

    strategy, book, results, _ = _answers(tmp_path, {3: "nan"})
    with_bad, _ = strategy.aggregate_fit(1, results, [])
    book.reset(1)
    without_bad, _ = strategy.aggregate_fit(1, results[:3], [])
    for a, b in zip(
        parameters_to_ndarrays(with_bad), parameters_to_ndarrays(without_bad), strict=True
    ):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


def test_a_failed_status_counts_as_dropped_not_averaged(tmp_path):
    strategy, book, results, _ = _answers(tmp_path, {})
    failed = FitRes(Status(Code.FIT_NOT_IMPLEMENTED, "x"), results[0][1].parameters, 0, {})
    parameters, _ = strategy.aggregate_fit(1, results[1:], [("proxy-0", failed)])
    assert parameters is not None and book.dropped == 1
