"""Full integrity check of a cache: the manifest against its own checksum (when it is read),
then every byte of every shard against the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from logitcache.errors import CorruptShardError
from logitcache.format.reader import Cache


@dataclass
class ShardProblem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class VerifyReport:
    shards_checked: int = 0
    sequences: int = 0
    tokens: int = 0
    problems: list[ShardProblem] = field(default_factory=list)
    # "verified": the manifest matched its own checksum (a mismatch refuses the cache before
    # verify starts); "unchecked": written before manifests carried one.
    manifest_integrity: str = "verified"

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_shard(cache: Cache, shard, ids_out: list[str]) -> Iterator[ShardProblem]:
    """Yield what is wrong with one shard; on success put its sample ids in ``ids_out``."""
    try:
        data = cache.store.read_bytes(shard.path)
    except FileNotFoundError:
        yield ShardProblem(shard.path, "file is missing")
        return
    if len(data) != shard.bytes:
        yield ShardProblem(shard.path, f"{len(data)} bytes on storage, manifest says {shard.bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != shard.sha256:
        yield ShardProblem(
            shard.path, f"sha256 mismatch ({digest[:12]}... vs manifest {shard.sha256[:12]}...)"
        )
        return
    try:
        pf = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
        if not pf.schema_arrow.equals(cache.schema):
            yield ShardProblem(shard.path, "schema differs from the manifest's codec")
            return
        table = pf.read()
    except (pa.ArrowInvalid, OSError) as exc:
        yield ShardProblem(shard.path, f"unreadable Parquet: {exc}")
        return
    if table.num_rows != shard.rows:
        yield ShardProblem(shard.path, f"{table.num_rows} rows, manifest says {shard.rows}")
    tokens = int(pc.sum(table.column("num_tokens")).as_py() or 0)
    if tokens != shard.tokens:
        yield ShardProblem(shard.path, f"{tokens} tokens, manifest says {shard.tokens}")
    try:
        for _ in cache.decode(table):
            pass
    except CorruptShardError as exc:
        yield ShardProblem(shard.path, exc.problem)
        return
    ids_out.extend(table.column("sample_id").to_pylist())


def verify_cache(cache: Cache, progress=None) -> VerifyReport:
    """Check size, sha256, schema, row and token counts, decodability, and unique sample ids."""
    report = VerifyReport(manifest_integrity=cache.manifest.integrity)
    seen: dict[str, str] = {}
    for shard in cache.shards:
        ids: list[str] = []
        problems = list(_check_shard(cache, shard, ids))
        report.shards_checked += 1
        report.problems.extend(problems)
        if not problems:
            report.sequences += shard.rows
            report.tokens += shard.tokens
            for sid in ids:
                if sid in seen:
                    report.problems.append(
                        ShardProblem(shard.path, f"sample_id {sid!r} also in {seen[sid]}")
                    )
                else:
                    seen[sid] = shard.path
        if progress is not None:
            progress(shard)
    return report
