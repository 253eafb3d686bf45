"""What every conversion shares: finding the source files, the tokenizer identity, provenance,
and writing samples into a cache through the format's commit protocol.

A conversion writes one shard per source row group (a deterministic unit), so an interrupted
conversion re-run into the same ``--out`` finishes the missing units. A conversion that fails on
bad input into a fresh location removes everything it wrote: nothing is left behind.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from logitcache.codecs import DEFAULT_CODEC, CodecContext, get_codec
from logitcache.errors import ConfigError, CorpusError, VocabularyMismatchError
from logitcache.format import Manifest, read_manifest, write_shard
from logitcache.format.lease import LEASE_NAME
from logitcache.format.shard import encode_table
from logitcache.format.target import open_write_target
from logitcache.format.version import MANIFEST_NAME, SHARD_DIR
from logitcache.storage import Store, redact_uri

log = logging.getLogger(__name__)
MAX_TOPK_MASS = 1.0 - 1e-12


class ConvertError(CorpusError):
    """A source dataset that cannot be converted (names the file and the fix)."""


@dataclass(frozen=True)
class SourceFile:
    path: str  # as fsspec opens it
    rel: str  # relative to the source root (what the manifest records)
    size: int


def list_sources(src: str, suffixes: tuple[str, ...], storage_options: Any = None):
    """``(fs, root, files)``: ``src`` itself, or every file under it ending in ``suffixes``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(src, **dict(storage_options or {}))
    if not fs.exists(root):
        raise ConvertError(f"{src} does not exist; give the dataset's directory or file")
    if fs.isdir(root):
        paths = sorted(p for p in fs.find(root) if p.endswith(suffixes))
        base = root.rstrip("/") + "/"
    else:
        paths, base = [root], root.rsplit("/", 1)[0] + "/"
    if not paths:
        raise ConvertError(
            f"{src} holds no {'/'.join(suffixes)} files; point SRC at the dataset's data files"
        )
    files = [SourceFile(p, p[len(base) :] if p.startswith(base) else p, fs.size(p)) for p in paths]
    return fs, root, files


def file_sha256(fs, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_key(rel: str) -> str:
    """A short stable name for a source file (sample ids and unit names derive from it)."""
    return hashlib.sha256(rel.encode("utf-8")).hexdigest()[:12]


def tail_from_topk(topk_logprobs: np.ndarray) -> np.ndarray:
    """The derived tail: ``log(1 - sum(exp(topk)))``, the top-k mass capped below 1."""
    mass = np.exp(topk_logprobs.astype(np.float64)).sum(axis=-1)
    return np.log1p(-np.minimum(mass, MAX_TOPK_MASS)).astype(np.float32)


@dataclass
class TokenizerInfo:
    teacher: dict[str, Any]
    tokenizer: Any
    width: int  # ids the teacher can emit: its logits width, else len(tokenizer)


def resolve_tokenizer(teacher: str | None, tokenizer: str | None) -> TokenizerInfo:
    """The tokenizer (and teacher identity when known) a converted cache records."""
    from logitcache.teachers import TeacherConfig, describe_teacher, load_tokenizer

    if not teacher and not tokenizer:
        raise ConfigError(
            "a converted cache needs the tokenizer's identity: pass --teacher T (the model that "
            "produced the logits) or --tokenizer T (its tokenizer)"
        )
    if teacher:
        cfg = TeacherConfig(teacher=teacher)
        described = describe_teacher(cfg)
        tok = load_tokenizer(cfg)
        return TokenizerInfo(described["identity"], tok, int(described["vocab_size"]))
    tok = load_tokenizer(TeacherConfig(teacher=str(tokenizer)))
    ident = {
        "name": None,
        "source": None,
        "revision": None,
        "weights_sha256": None,
        "dtype": None,
        "backend": "import",
        "note": f"teacher not given; tokenizer {tokenizer}",
    }
    return TokenizerInfo(ident, tok, len(tok))


def check_width(info: TokenizerInfo, d: int, where: str) -> None:
    if info.width < d:
        raise VocabularyMismatchError(
            f"{where}: the distribution has d={d} ids but the tokenizer/teacher has only "
            f"{info.width}; these logits came from another vocabulary. Pass the teacher that "
            "produced them (--teacher, whose logits width counts padded ids) or its tokenizer."
        )


@dataclass
class ConvertPlan:
    """Everything a source reader hands to :func:`write_cache`."""

    fmt: str
    top_k: int
    vocab_size: int
    seq_len: int
    units: list[tuple[str, Callable[[], list[dict[str, Any]]]]]  # (unit name, load samples)
    provenance: dict[str, Any]


def write_cache(
    plan: ConvertPlan,
    out: str,
    info: TokenizerInfo,
    *,
    codec: str | None = None,
    storage_options: Mapping[str, Any] | str | None = None,
) -> Manifest:
    """Write the plan's units into the cache at ``out`` (resuming one made the same way)."""
    from logitcache.teachers import tokenizer_identity

    store = Store.open(out, storage_options)
    fresh = read_manifest(store) is None
    if fresh and store.list(SHARD_DIR):
        raise ConfigError(f"{store.uri} is not empty and holds no cache; use a new --out")
    ctx = CodecContext(vocab_size=plan.vocab_size, top_k=plan.top_k, rs_samples=0)
    codec_obj = get_codec(codec or DEFAULT_CODEC)
    try:
        first_name, first_load = plan.units[0]
        first = first_load()
        if fresh and "ranks=" not in (codec or ""):
            codec_obj = codec_obj.calibrate(first, ctx)
        elif not fresh:
            codec_obj = get_codec(read_manifest(store).codec["spec"])
        header = Manifest(
            teacher=info.teacher,
            tokenizer=tokenizer_identity(info.tokenizer, plan.vocab_size),
            capture={
                "top_k": plan.top_k,
                "rs_samples": 0,
                "seq_len": plan.seq_len,
                "packing": "imported",
                "alignment": "next-token",
                "temperature": 1.0,
                "source": f"convert:{plan.fmt}",
                "tail": "derived",
            },
            codec=codec_obj.describe(),
            corpus={
                "fingerprint": plan.provenance["fingerprint"],
                "sources": [plan.provenance["source"]],
                "documents": None,
            },
            extra={"provenance": plan.provenance},
        )
        # One writer at a time, as for `build`: the cache's write lease.
        with open_write_target(out, header, storage_options) as target:
            try:
                writer = target.open_writer(header)
                done = writer.committed_units
                for name, load in plan.units:
                    if name in done:
                        continue
                    samples = first if name == first_name else load()
                    table = encode_table(samples, codec_obj, ctx)
                    writer.commit([write_shard(writer.store, name, table)])
                manifest = writer.finish({"converted_from": plan.fmt})
            except BaseException:
                if fresh:
                    _remove(store)  # still under the lease
                raise
    except BaseException:
        if fresh:
            _remove(store)
        raise
    log.info(
        "converted %s into %s: %d sequences, %d tokens",
        plan.fmt,
        redact_uri(store.uri),
        manifest.num_sequences,
        manifest.num_tokens,
    )
    return manifest


def _remove(store: Store) -> None:
    """Undo a failed fresh conversion: its shards, manifest and (once the lease is given up)
    the lease's lock side file, so a bad input leaves no file behind."""
    for rel in store.list(SHARD_DIR):
        store.delete(rel)
    for rel in (MANIFEST_NAME, f"{LEASE_NAME}.lock"):
        try:
            if store.exists(rel) and not (rel.endswith(".lock") and store.exists(LEASE_NAME)):
                store.delete(rel)
        except FileNotFoundError:
            pass


def iter_cache_rows(uri: str, storage_options: Any = None) -> Iterator[tuple[Any, list[dict]]]:
    """``(cache, samples of one row group)`` for every row group, in manifest order."""
    from logitcache.format import open_cache

    cache = open_cache(uri, storage_options)
    for shard in cache.shards:
        for table in cache.iter_row_groups(shard):
            yield cache, list(cache.decode(table))


def prepare_out_dir(out: str, storage_options: Any = None):
    """``(fs, root)`` of an export target that is new or empty (never mixed with old files)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(out, **dict(storage_options or {}))
    if fs.exists(root) and (not fs.isdir(root) or fs.ls(root)):
        raise ConfigError(f"{out} already exists and is not empty; export into a new directory")
    fs.makedirs(root, exist_ok=True)
    return fs, root.rstrip("/")
