"""The etcd lease backend against a real etcd on loopback (started by the fixture)."""

from __future__ import annotations

import time

import pytest

from wattwise.train.lease import EtcdLease, LeaseKeeper, LeaseUnavailableError


def test_etcd_lease_expires_without_renewal_and_the_next_holder_gets_a_newer_epoch(etcd_endpoint):
    # TTL 3 s, renewed every 1 s: a renewal thread delayed by a busy machine still keeps it.
    first = EtcdLease([etcd_endpoint], key="/test/primary", ttl_s=3, holder="first")
    second = EtcdLease([etcd_endpoint], key="/test/primary", ttl_s=3, holder="second")
    epoch = first.try_acquire()
    assert epoch is not None and epoch > 0
    assert second.try_acquire() is None  # held: create-if-absent fails
    keeper = LeaseKeeper(first, epoch)  # renews every TTL/3
    time.sleep(4.0)  # longer than one TTL
    assert second.try_acquire() is None  # still held thanks to the renewals
    keeper.stop(release=False)  # the primary dies without releasing
    deadline = time.monotonic() + 60  # only catches a lease that never expires
    taken = None
    while taken is None and time.monotonic() < deadline:
        taken = second.try_acquire()
        time.sleep(0.1)
    assert taken is not None and taken > epoch
    assert not first.renew(epoch)  # fenced
    assert first.current_epoch() == taken


def test_etcd_release_lets_the_standby_in_at_once(etcd_endpoint):
    first = EtcdLease([etcd_endpoint], key="/test/release", ttl_s=5, holder="first")
    second = EtcdLease([etcd_endpoint], key="/test/release", ttl_s=5, holder="second")
    epoch = first.try_acquire()
    first.release(epoch)
    assert second.try_acquire() > epoch


def test_unreachable_etcd_is_a_clear_error():
    lease = EtcdLease(["http://127.0.0.1:9"], ttl_s=1)
    with pytest.raises(LeaseUnavailableError, match="etcd unreachable"):
        lease.try_acquire()


def test_training_with_the_etcd_lease_fences_replicas_with_its_revision(etcd_endpoint, tmp_path):
    from wattwise.api import train
    from wattwise.train.chaos import tiny_settings

    lease = {"backend": "etcd", "endpoints": [etcd_endpoint], "ttl_s": 2}
    result = train(tiny_settings(tmp_path, steps=20, lease=lease))
    assert result.final_step == 20 and result.epoch > 0
    assert int((tmp_path / "replica-a" / "FENCE").read_text()) == result.epoch
