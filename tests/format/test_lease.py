"""Write leases: exactly one holder, waiting, refusal, expiry takeover, loss detection.

Runs on local disk, memory:// and the moto S3 server (conditional PUTs: If-None-Match/If-Match).
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from logitcache.errors import ConfigError, LeaseHeldError, LeaseLostError
from logitcache.format.lease import LEASE_NAME, LeaseConfig, acquire_lease, read_lease
from logitcache.storage import Store


def race(uri: str, n: int, config: LeaseConfig):
    """``n`` threads try to take the lease at the same moment; returns (leases, errors)."""
    barrier = threading.Barrier(n)
    leases, errors = [], []

    def attempt():
        store = Store.open(uri)  # one Store (and client) per builder, as separate processes
        barrier.wait()
        try:
            leases.append(acquire_lease(store, config, heartbeat=False))
        except LeaseHeldError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return leases, errors


def test_concurrent_acquirers_exactly_one_wins(cache_uri):
    leases, errors = race(cache_uri, 4, LeaseConfig(ttl_s=60))
    assert len(leases) == 1 and len(errors) == 3
    winner = leases[0]
    rec = read_lease(Store.open(cache_uri))
    assert rec is not None and rec.owner_id == winner.owner_id and not rec.expired
    # the refusal names the holder and how to proceed
    assert winner.owner_id[:8] in str(errors[0]) and "--wait-lease" in str(errors[0])
    winner.release()
    rec = read_lease(Store.open(cache_uri))
    assert rec is None or rec.released


def test_concurrent_takeover_of_expired_lease_exactly_one_wins(cache_uri):
    stale = acquire_lease(cache_uri, LeaseConfig(ttl_s=0.5), heartbeat=False)
    time.sleep(0.7)  # the "crashed" builder never renews
    leases, errors = race(cache_uri, 3, LeaseConfig(ttl_s=60))
    assert len(leases) == 1 and len(errors) == 2
    assert read_lease(Store.open(cache_uri)).owner_id == leases[0].owner_id
    # the old holder finds out at its next commit and stops writing
    stale.renew()
    with pytest.raises(LeaseLostError, match="took it over"):
        stale.check()
    leases[0].release()


def test_waiter_gets_lease_after_release(tmp_path):
    uri = str(tmp_path / "cache")
    first = acquire_lease(uri, LeaseConfig(ttl_s=30))
    threading.Timer(0.6, first.release).start()
    t0 = time.monotonic()
    second = acquire_lease(uri, LeaseConfig(ttl_s=30, wait_s=10, poll_s=0.1))
    assert 0.5 < time.monotonic() - t0 < 5
    assert read_lease(Store.open(uri)).owner_id == second.owner_id
    second.release()


def test_heartbeat_keeps_lease_alive_past_ttl(memory_root):
    uri = memory_root + "/c"
    held = acquire_lease(uri, LeaseConfig(ttl_s=0.6, heartbeat_s=0.1))
    time.sleep(1.2)  # two TTLs: without renewal it would have expired
    with pytest.raises(LeaseHeldError):
        acquire_lease(uri, LeaseConfig(ttl_s=10), heartbeat=False)
    held.check()  # still ours
    held.release()
    again = acquire_lease(uri, LeaseConfig(ttl_s=10), heartbeat=False)
    again.release()


def test_lease_file_is_plain_json_naming_owner(tmp_path):
    uri = str(tmp_path / "cache")
    with acquire_lease(uri, LeaseConfig(ttl_s=30), heartbeat=False) as held:
        data = json.loads((tmp_path / "cache" / LEASE_NAME).read_text())
        assert data["owner"]["id"] == held.owner_id
        assert data["owner"]["pid"] > 0 and data["expires_unix"] > data["created_unix"]
    assert not (tmp_path / "cache" / LEASE_NAME).exists()


def test_config_validation_says_how_to_fix():
    with pytest.raises(ConfigError, match="below ttl_s"):
        LeaseConfig(ttl_s=10, heartbeat_s=20)
    with pytest.raises(ConfigError, match="--wait-lease"):
        LeaseConfig(wait_s=-1)
