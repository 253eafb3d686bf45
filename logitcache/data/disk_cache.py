"""A bounded local disk cache of whole shard files, for repeated epochs over remote storage.

Files are named by their manifest sha256, so the cache is content-addressed: several caches,
epochs and DataLoader worker processes can share one directory, and a file is verified once,
when it is downloaded. Writes are atomic (temporary name, then rename); eviction removes the
least recently used files until the directory fits ``max_bytes``. A file deleted while another
process reads it stays readable to that process (POSIX semantics), so no locking is needed.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

from logitcache.errors import ConfigError
from logitcache.format import Cache, ShardInfo

log = logging.getLogger(__name__)
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ShardDiskCache:
    """Local copies of shards under ``root``, at most ``max_bytes`` in total (LRU by use)."""

    def __init__(self, root: str | os.PathLike, max_bytes: int):
        if max_bytes <= 0:
            raise ConfigError(
                f"local_cache_bytes must be positive, got {max_bytes}; pass e.g. 20 * 2**30"
            )
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, shard: ShardInfo) -> Path:
        if not _SHA_RE.match(shard.sha256):
            raise ConfigError(f"shard {shard.path!r} has no valid sha256 to name its local copy")
        return self.root / f"{shard.sha256}.parquet"

    def get(self, cache: Cache, shard: ShardInfo) -> Path:
        """Path of a verified local copy of ``shard``, downloading it on a miss."""
        target = self.path_for(shard)
        if target.exists():
            os.utime(target)  # mark as recently used
            return target
        data = cache.read_shard_bytes(shard)  # checks the manifest sha256
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("cached %s locally (%d bytes)", shard.path, len(data))
        self.evict(keep=target)
        return target

    def usage(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used copies until the total fits ``max_bytes``."""
        entries = []
        for p in self._files():
            try:
                st = p.stat()
            except FileNotFoundError:  # evicted concurrently by another worker
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, p in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if keep is not None and p == keep:
                continue
            p.unlink(missing_ok=True)
            total -= size
            removed.append(p)
        return removed

    def _files(self) -> list[Path]:
        return [p for p in self.root.glob("*.parquet") if _SHA_RE.match(p.stem)]
