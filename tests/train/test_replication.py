"""Replication: sync fails loudly on an unreachable replica, degrade says so, async reports lag."""

from __future__ import annotations

import pytest

from tests.train.conftest import free_port
from wattwise.api import train
from wattwise.train.chaos import tiny_settings
from wattwise.train.checkpoint import newest_committed
from wattwise.train.journal import read_events
from wattwise.train.store import LocalStore, ReplicaUnreachableError, checkpoint_name


def unreachable_replica() -> str:
    """An FTP replica on a loopback port where nothing listens: connection refused."""
    return f"ftp://127.0.0.1:{free_port()}/checkpoints"


def test_sync_replication_fails_loudly_when_a_replica_is_unreachable(tmp_path):
    dead = unreachable_replica()
    settings = tiny_settings(tmp_path, replicas=[str(tmp_path / "local"), dead])
    with pytest.raises(ReplicaUnreachableError, match=f"replica {dead}"):
        train(settings)
    # Nothing was acknowledged, so nothing may look committed on the reachable replica either.
    assert newest_committed([LocalStore(tmp_path / "local")], warn=lambda m: None) is None


def test_degrade_policy_keeps_training_on_the_other_replicas_and_says_so(tmp_path):
    dead = unreachable_replica()
    settings = tiny_settings(
        tmp_path, replicas=[str(tmp_path / "local"), dead], on_replica_failure="degrade"
    )
    result = train(settings)
    assert result.final_step == 40 and result.degraded == [dead]
    messages = [e.get("message", "") for e in read_events(tmp_path / "run" / "events.jsonl")]
    assert any("degraded to async as configured" in m and dead in m for m in messages)
    survivor = newest_committed([LocalStore(tmp_path / "local")], warn=lambda m: None)
    assert survivor.step == 40


def test_async_replication_commits_everything_at_close_and_reports_a_bounded_lag(tmp_path):
    settings = tiny_settings(
        tmp_path,
        replication="async",
        async_queue_size=1,
        checkpoint={"every_steps": 5, "keep_last": 2},
    )
    result = train(settings)
    assert result.replication == "async" and result.checkpoints == 8
    bound = (1 + 1) * 5  # (queue size + 1) × interval
    events = read_events(tmp_path / "run" / "events.jsonl")
    lags = [e["lag_steps"] for e in events if e["event"] in ("step", "checkpoint")]
    assert max(lags) <= bound and result.max_lag_steps <= bound
    for replica in ("replica-a", "replica-b"):
        names = sorted(p.name for p in (tmp_path / replica).glob("step-*"))
        assert names == [checkpoint_name(35), checkpoint_name(40)]
