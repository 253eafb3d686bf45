"""The write lease of the commit protocol: exactly one writer per cache, the others wait or
refuse.

The lease is a small JSON file (``_lease.json``) next to the manifest. It names its owner
(host, pid, a random id), when it was taken and when it expires; a heartbeat thread renews it
while the build runs. A builder that crashed stops renewing, its lease expires, and the next
builder takes it over and resumes the cache (the commit protocol makes that safe). Releasing
deletes the file, or on S3 marks it ``released`` (the next builder takes it at once).

Every change -- take, take over, renew, release -- is a conditional write of the store
(:mod:`logitcache.storage.conditional`: create-if-absent, replace-if-unchanged), so of two
builders racing for one lease exactly one wins. On filesystems without real conditional writes
the store falls back to write-then-read-back and this module logs a warning.

Expiry compares wall clocks of different hosts: keep the TTL far above their clock skew
(the default is 120 s, renewed every 30 s).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from logitcache.errors import ConfigError, LeaseHeldError, LeaseLostError, WriteConflictError
from logitcache.storage import Store

log = logging.getLogger(__name__)

LEASE_NAME = "_lease.json"


@dataclass(frozen=True, kw_only=True)
class LeaseConfig:
    """How long a lease lives, how often it is renewed, and how long to wait for a busy one."""

    ttl_s: float = 120.0
    heartbeat_s: float | None = None  # default ttl_s / 4
    wait_s: float = 0.0
    poll_s: float = 2.0

    def __post_init__(self) -> None:
        if self.ttl_s <= 0:
            raise ConfigError(f"lease ttl_s={self.ttl_s} must be > 0 (seconds)")
        if self.heartbeat_s is not None and not 0 < self.heartbeat_s < self.ttl_s:
            raise ConfigError(
                f"lease heartbeat_s={self.heartbeat_s} must be > 0 and below ttl_s={self.ttl_s}, "
                "or the lease expires between renewals"
            )
        if self.wait_s < 0:
            raise ConfigError(f"--wait-lease {self.wait_s} must be >= 0 seconds")
        if self.poll_s <= 0:
            raise ConfigError(f"lease poll_s={self.poll_s} must be > 0")

    @property
    def renew_every_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.ttl_s / 4


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


# Owner ids of leases this process gave up but could not mark released (the store was down).
# Process-wide on purpose: it records what *this process* abandoned, so that a later attempt
# from the same process (whose pid still reads as alive) may take them over at once instead of
# waiting out the TTL. It only ever grows by one id per failed release.
_ABANDONED: set[str] = set()


@dataclass(frozen=True)
class LeaseRecord:
    """The lease file's content."""

    owner_id: str
    host: str
    pid: int
    created: float
    expires: float
    released: bool = False
    purpose: str = ""

    @property
    def expired(self) -> bool:
        return self.released or time.time() >= self.expires

    @property
    def owner_gone(self) -> bool:
        """The holder ran on this host and its process no longer exists (killed, crashed).

        Lets a re-run take over at once instead of waiting out the TTL. A reused pid reads
        as alive, which only falls back to waiting for expiry: the safe side.
        """
        if self.owner_id in _ABANDONED:
            return True  # this process gave it up but could not delete it (store was down)
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # e.g. EPERM: a process with that pid exists
            return False
        return False

    def describe(self) -> str:
        state = "released" if self.released else f"expires {_iso(self.expires)}"
        return f"host {self.host} pid {self.pid} (lease {self.owner_id[:8]}, {state})"

    def to_bytes(self) -> bytes:
        d = {
            "owner": {"id": self.owner_id, "host": self.host, "pid": self.pid},
            "purpose": self.purpose,
            "created": _iso(self.created),
            "expires": _iso(self.expires),
            "created_unix": self.created,
            "expires_unix": self.expires,
            "released": self.released,
        }
        return (json.dumps(d, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord | None:
        """Parse; an unreadable lease (torn write on an odd filesystem) counts as expired."""
        try:
            d = json.loads(data)
            return cls(
                owner_id=str(d["owner"]["id"]),
                host=str(d["owner"]["host"]),
                pid=int(d["owner"]["pid"]),
                created=float(d["created_unix"]),
                expires=float(d["expires_unix"]),
                released=bool(d.get("released", False)),
                purpose=str(d.get("purpose", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


# -- the lease --------------------------------------------------------------------------------


@dataclass
class Lease:
    """A held write lease. Use :func:`acquire_lease`; release with :meth:`release` or ``with``."""

    store: Store
    record: LeaseRecord
    config: LeaseConfig
    _version: str = field(repr=False)
    rel: str = LEASE_NAME
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def owner_id(self) -> str:
        return self.record.owner_id

    def renew(self) -> None:
        """Push the expiry forward; mark the lease lost if someone else took it over."""
        with self._mutex:
            if self.lost:
                return
            now = time.time()
            rec = LeaseRecord(**{**self.record.__dict__, "expires": now + self.config.ttl_s})
            try:
                self._version = self.store.replace_if(self.rel, rec.to_bytes(), self._version)
                self.record = rec
            except WriteConflictError:
                self.lost = True
                log.error(
                    "write lease on %s was taken over by another builder; stop writing",
                    self.store.uri,
                )

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease was lost (call before each commit)."""
        if self._stop.is_set():
            raise LeaseLostError(
                f"the write lease on {self.store.uri} was released; nothing may be written "
                "after a build gave its lease up"
            )
        if self.lost:
            raise LeaseLostError(
                f"the write lease on {self.store.uri} expired and another builder took it over "
                "(this process stalled longer than the lease TTL). Its work is safe; re-run the "
                "build to resume, with a longer lease TTL if this machine is slow."
            )
        if self._thread is None and time.time() > self.record.expires - self.config.ttl_s / 2:
            self.renew()

    def start_heartbeat(self) -> Lease:
        """Renew in a daemon thread every ``renew_every_s`` until released."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._beat, name=f"lease-heartbeat-{self.owner_id[:8]}", daemon=True
            )
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.config.renew_every_s):
            try:
                self.renew()
            except Exception as exc:  # a transient storage error must not kill the heartbeat
                log.warning("renewing the write lease on %s failed: %s", self.store.uri, exc)
            if self.lost:
                return

    def release(self) -> None:
        """Stop the heartbeat and give the lease up (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        with self._mutex:
            if self.lost:
                return
            try:
                if self.store.conditional_delete:
                    self.store.delete_if(self.rel, self._version)
                else:
                    # S3: marked released instead (see logitcache.storage.conditional); the
                    # next builder takes a released lease at once.
                    released = LeaseRecord(
                        **{**self.record.__dict__, "released": True, "expires": time.time()}
                    )
                    self.store.replace_if(self.rel, released.to_bytes(), self._version)
            except WriteConflictError:
                log.warning("write lease on %s was already taken over", self.store.uri)
            except Exception as exc:  # noqa: BLE001 - best effort: the lease expires anyway
                # Releasing runs on error paths too (e.g. the store is down): never let it
                # replace the error that brought us here.
                log.warning(
                    "could not release the write lease on %s (%s); it expires at %s",
                    self.store.uri,
                    type(exc).__name__,
                    _iso(self.record.expires),
                )
                _ABANDONED.add(self.record.owner_id)
                self.lost = True
                return
            self.lost = True  # no longer ours either way
        log.info("released write lease on %s", self.store.uri)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_lease(store: Store, rel: str = LEASE_NAME) -> LeaseRecord | None:
    """The current lease on ``store`` (possibly expired), or None."""
    current = store.read_versioned(rel)
    return LeaseRecord.from_bytes(current[0]) if current else None


def acquire_lease(
    uri_or_store: str | Store,
    config: LeaseConfig | None = None,
    *,
    storage_options: str | Mapping[str, Any] | None = None,
    purpose: str = "build",
    heartbeat: bool = True,
) -> Lease:
    """Take the write lease of the cache at ``uri_or_store``.

    A live lease held by someone else makes this wait up to ``config.wait_s`` seconds, then
    raise :class:`LeaseHeldError` naming the holder and its expiry. An expired or released lease
    is taken over (conditionally, so of two builders taking over at once only one wins).
    """
    config = config or LeaseConfig()
    store = (
        uri_or_store
        if isinstance(uri_or_store, Store)
        else Store.open(uri_or_store, storage_options)
    )
    if not store.atomic_conditional_writes:
        log.warning(
            "%s has no conditional writes in logitcache; the write lease falls back to "
            "write-then-read-back, which narrows but does not close the race between two builders",
            store.uri,
        )
    owner_id = uuid.uuid4().hex
    deadline = time.monotonic() + config.wait_s
    waited = False
    while True:
        now = time.time()
        record = LeaseRecord(
            owner_id=owner_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            created=now,
            expires=now + config.ttl_s,
            purpose=purpose,
        )
        current = store.read_versioned(LEASE_NAME)
        holder = LeaseRecord.from_bytes(current[0]) if current else None
        try:
            if current is None:
                version = store.create_exclusive(LEASE_NAME, record.to_bytes())
            elif holder is None or holder.expired or holder.owner_gone:
                if holder is not None and not holder.released:
                    log.warning(
                        "taking over the write lease on %s left by %s, which %s",
                        store.uri,
                        holder.describe(),
                        "has expired" if holder.expired else "is no longer running",
                    )
                version = store.replace_if(LEASE_NAME, record.to_bytes(), current[1])
            else:
                raise WriteConflictError(f"{store.uri}: the write lease is held")
        except WriteConflictError:
            store.invalidate()
            if time.monotonic() >= deadline:
                holder = read_lease(store) or holder
                who = holder.describe() if holder else "another builder"
                raise LeaseHeldError(
                    f"{store.uri} is being written by {who}. Wait for it (--wait-lease SECONDS), "
                    "or if that builder is gone, wait for its lease to expire and re-run: the "
                    "build resumes where it stopped."
                ) from None
            if not waited:
                log.info(
                    "write lease on %s is held; waiting up to %.0f s", store.uri, config.wait_s
                )
                waited = True
            time.sleep(min(config.poll_s, max(0.0, deadline - time.monotonic())) or 0.01)
            continue
        lease = Lease(store=store, record=record, config=config, _version=version)
        log.info("holding write lease on %s (%s)", store.uri, record.describe())
        return lease.start_heartbeat() if heartbeat else lease


__all__ = [
    "LEASE_NAME",
    "Lease",
    "LeaseConfig",
    "LeaseRecord",
    "acquire_lease",
    "read_lease",
]
