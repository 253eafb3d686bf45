"""DistillKit offline-distillation datasets <-> logitcache caches.

DistillKit's layout (v1, as its ``sample_logits`` writes it): Parquet files with columns
``input_ids`` (list<uint64>, T tokens), ``compressed_logprobs`` and ``bytepacked_indices``
(list<list<uint8>>, one byte row per position, see :mod:`.distillkit_layout`), optionally
``labels`` / ``attention_mask``, and a ``compression_config.yaml`` beside them. Row j of the
byte lists is the distribution of token j+1, as in our format; a vLLM capture has T-1 rows (the
last token predicts nothing), which we complete with a placeholder last row (top-k ``-inf``,
tail 0, ``loss_mask`` false) that export drops again.

DistillKit stores no tail: it is derived from the decoded top-k, and the manifest says so
(``capture.tail = "derived"``, ``extra.provenance``: format, config, file checksums).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from logitcache.convert.common import (
    ConvertError,
    ConvertPlan,
    check_width,
    file_key,
    file_sha256,
    iter_cache_rows,
    list_sources,
    prepare_out_dir,
    tail_from_topk,
)
from logitcache.convert.distillkit_layout import (
    DistillKitConfig,
    decode_indices,
    decode_logprobs,
    encode_positions,
    recommended_config,
)
from logitcache.errors import ConfigError
from logitcache.storage import redact_uri

log = logging.getLogger(__name__)
CONFIG_NAME = "compression_config.yaml"
COLUMNS = ("input_ids", "compressed_logprobs", "bytepacked_indices")


def read_config(path: str, storage_options: Any = None) -> DistillKitConfig:
    import fsspec
    import yaml

    try:
        with fsspec.open(path, "r", **dict(storage_options or {})) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConvertError(
            f"{path} not found: a DistillKit dataset needs the compression_config.yaml its "
            "capture used (DistillKit writes it beside the data). Put it there or pass "
            "--compression-config PATH."
        ) from None
    except yaml.YAMLError as exc:
        raise ConvertError(f"{path} is not valid YAML ({exc})") from None
    if isinstance(data, dict) and "logprob_compressor" in data:
        data = data["logprob_compressor"]  # a DistillKit training config's teacher section
    return DistillKitConfig.from_dict(data, where=path)


def _inner_lengths(col: pa.ChunkedArray) -> np.ndarray:
    return pc.list_value_length(pc.list_flatten(col)).to_numpy(zero_copy_only=False)


def _byte_rows(col: pa.ChunkedArray, width: int) -> np.ndarray:
    flat = pc.list_flatten(pc.list_flatten(col)).to_numpy(zero_copy_only=False)
    return flat.astype(np.uint8, copy=False).reshape(-1, width)


def _check_lengths(table: pa.Table, cfg: DistillKitConfig, rel: str, first_row: int) -> None:
    """Every position's byte rows must have the config's sizes; positions T-1 or T per row."""
    for name, want in (
        ("bytepacked_indices", cfg.index_bytes),
        ("compressed_logprobs", cfg.logprob_bytes),
    ):
        lengths = _inner_lengths(table.column(name))
        bad = np.flatnonzero(lengths != want)
        if bad.size:
            per_row = pc.list_value_length(table.column(name)).to_numpy(zero_copy_only=False)
            row = int(np.searchsorted(np.cumsum(per_row), bad[0], side="right"))
            if bad.size == lengths.size:
                raise ConvertError(
                    f"{rel}: every {name} row holds {int(lengths[0])} bytes, the config "
                    f"(d={cfg.d}, k={cfg.k}, exact_k={cfg.exact_k}, ...) gives {want}: "
                    f"{CONFIG_NAME} does not describe this data. Use the config of the capture "
                    "(--compression-config)."
                )
            raise ConvertError(
                f"{rel}: row {first_row + row} has a {name} position of {int(lengths[bad[0]])} "
                f"bytes where the config gives {want}; the file is corrupt or mixes captures. "
                "Re-export that file, or remove it from SRC."
            )
    n_in = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
    n_lp = pc.list_value_length(table.column("compressed_logprobs")).to_numpy(zero_copy_only=False)
    n_ix = pc.list_value_length(table.column("bytepacked_indices")).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((n_lp != n_ix) | ((n_lp != n_in) & (n_lp != n_in - 1)) | (n_in < 1))
    if bad.size:
        r = int(bad[0])
        raise ConvertError(
            f"{rel}: row {first_row + r} has {int(n_in[r])} input_ids but {int(n_lp[r])} "
            f"compressed_logprobs and {int(n_ix[r])} bytepacked_indices positions (expected T-1 "
            "or T of each); the row is corrupt. Re-export that file, or remove it from SRC."
        )


def _samples(table: pa.Table, cfg: DistillKitConfig, rel: str, first_row: int) -> list[dict]:
    _check_lengths(table, cfg, rel, first_row)
    ids = decode_indices(_byte_rows(table.column("bytepacked_indices"), cfg.index_bytes), cfg)
    lps = decode_logprobs(_byte_rows(table.column("compressed_logprobs"), cfg.logprob_bytes), cfg)
    if ids.size and int(ids.max()) >= cfg.d:
        raise ConvertError(
            f"{rel}: a decoded token id {int(ids.max())} is >= d={cfg.d}; the config's d does "
            "not match this data (or the file is corrupt)"
        )
    tails = tail_from_topk(lps)
    input_ids = table.column("input_ids").to_pylist()
    labels = table.column("labels").to_pylist() if "labels" in table.column_names else None
    attn = (
        table.column("attention_mask").to_pylist()
        if "attention_mask" in table.column_names
        else None
    )
    key = file_key(rel)
    per_row = pc.list_value_length(table.column("compressed_logprobs"))
    per_row = per_row.to_numpy(zero_copy_only=False)
    out, pos = [], 0
    for r, toks in enumerate(input_ids):
        t = len(toks)
        n = int(per_row[r])
        a, b = pos, pos + n
        pos = b
        row_ids, row_lp, row_tail = ids[a:b], lps[a:b], tails[a:b]
        if n == t - 1:  # no distribution for the last token: a placeholder row
            row_ids = np.concatenate([row_ids, np.arange(cfg.k, dtype=np.int64)[None]])
            row_lp = np.concatenate([row_lp, np.full((1, cfg.k), -np.inf, np.float32)])
            row_tail = np.concatenate([row_tail, np.zeros(1, np.float32)])
        mask = np.ones(t, bool)
        if labels is not None:
            mask[: t - 1] = np.asarray(labels[r][1:t]) != -100
        elif attn is not None:
            mask[: t - 1] = np.asarray(attn[r][1:t]) != 0
        mask[-1] = False
        out.append(
            {
                "sample_id": f"dk-{key}-{first_row + r:08d}",
                "input_ids": np.asarray(toks, np.int64).astype(np.int32),
                "loss_mask": mask,
                "topk_ids": row_ids.astype(np.int32),
                "topk_logprobs": row_lp.astype(np.float32),
                "tail_logmass": row_tail,
            }
        )
    return out


def plan_import(
    src: str, *, compression_config: str | None = None, storage_options: Any = None, info=None
) -> ConvertPlan:
    """Check a DistillKit dataset (files, config, schema, sizes) and plan its units."""
    fs, root, files = list_sources(src, (".parquet",), storage_options)
    files = [f for f in files if not f.rel.rsplit("/", 1)[-1].startswith((".", "_"))]
    if compression_config is None:
        base = root if fs.isdir(root) else root.rsplit("/", 1)[0]
        compression_config = fs.unstrip_protocol(f"{base.rstrip('/')}/{CONFIG_NAME}")
    cfg = read_config(compression_config, storage_options)
    if info is not None:
        check_width(info, cfg.d, compression_config)
    units = []
    seq_len = 0
    provenance_files = []
    for f in files:
        pf = pq.ParquetFile(fs.open(f.path, "rb"))
        names = set(pf.schema_arrow.names)
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            hint = (
                " (this looks like DistillKit's legacy packed_indices/exact_values/coeffs "
                "layout, which is not supported)"
                if "packed_indices" in names
                else ""
            )
            raise ConvertError(
                f"{f.rel}: missing column(s) {missing}{hint}; a DistillKit dataset has "
                f"{list(COLUMNS)}"
            )
        if pf.metadata.num_row_groups:
            head = pf.read_row_group(0, columns=list(COLUMNS))
            _check_lengths(head, cfg, f.rel, 0)
        first = 0
        for g in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            units.append((f"dk-{file_key(f.rel)}-{g:05d}", _loader(fs, f, g, cfg, first)))
            first += rows
        seq_len = max(seq_len, _max_len(pf))
        provenance_files.append({"path": f.rel, "bytes": f.size, "sha256": file_sha256(fs, f.path)})
    if not units:
        raise ConvertError(f"{src}: the Parquet files hold no rows")
    import hashlib

    fingerprint = hashlib.sha256(
        "".join(p["sha256"] for p in provenance_files).encode()
    ).hexdigest()[:16]
    provenance = {
        "format": "distillkit",
        "source": redact_uri(src),
        "config": cfg.to_dict(),
        "files": provenance_files,
        "fingerprint": fingerprint,
        "tail": "derived: log(1 - sum(exp(topk_logprobs))) of the decoded top-k; DistillKit "
        "stores no tail",
        "last_position": "rows with T-1 distributions get a placeholder last row (top-k -inf, "
        "tail 0, loss_mask false)",
    }
    return ConvertPlan(
        fmt="distillkit",
        top_k=cfg.k,
        vocab_size=cfg.d,
        seq_len=seq_len,
        units=units,
        provenance=provenance,
    )


def _max_len(pf: pq.ParquetFile) -> int:
    best = 0
    for g in range(pf.metadata.num_row_groups):
        col = pf.read_row_group(g, columns=["input_ids"]).column("input_ids")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        best = max(best, int(lengths.max()) if lengths.size else 0)
    return best


def _loader(fs, f, group: int, cfg: DistillKitConfig, first_row: int):
    def load() -> list[dict]:
        pf = pq.ParquetFile(fs.open(f.path, "rb"))
        table = pf.read_row_group(group)
        return _samples(table, cfg, f.rel, first_row)

    return load


# -- export -------------------------------------------------------------------------------
def export(
    cache_uri: str,
    out: str,
    *,
    compression_config: str | None = None,
    storage_options: Any = None,
) -> dict[str, Any]:
    """Write the cache as a DistillKit dataset (one Parquet file per cache row group and its
    ``compression_config.yaml``); DistillKit's recommended config unless one is given."""
    import yaml

    from logitcache.format import open_cache

    cache = open_cache(cache_uri, storage_options)
    m = cache.manifest
    if m.top_k == 0:
        raise ConfigError(
            f"{cache_uri} stores no top-k (sampled draws only); DistillKit needs top-k"
        )
    cfg = (
        read_config(compression_config)
        if compression_config
        else recommended_config(m.vocab_size, m.top_k)
    )
    if cfg.k > m.top_k:
        raise ConfigError(
            f"the DistillKit config has k={cfg.k} but the cache stores top-{m.top_k}; use k <= "
            f"{m.top_k}"
        )
    if cfg.d < m.vocab_size:
        raise ConfigError(f"the DistillKit config has d={cfg.d} < the cache's {m.vocab_size} ids")
    fs, root = prepare_out_dir(out)
    schema = pa.schema(
        [
            pa.field("input_ids", pa.list_(pa.uint64())),
            pa.field("compressed_logprobs", pa.list_(pa.list_(pa.uint8()))),
            pa.field("bytepacked_indices", pa.list_(pa.list_(pa.uint8()))),
        ]
    )
    files, rows = 0, 0
    for _, samples in iter_cache_rows(cache_uri, storage_options):
        table = _export_table(samples, cfg, schema)
        with fs.open(f"{root}/data-{files:05d}.parquet", "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        files += 1
        rows += len(samples)
    with fs.open(f"{root}/{CONFIG_NAME}", "w") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
    log.info("exported %d rows in %d files to %s (DistillKit layout)", rows, files, out)
    return {"files": files, "rows": rows, "config": cfg.to_dict()}


def _nested(values: np.ndarray, counts: list[int], width: int) -> pa.Array:
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(0, values.shape[0] * width + 1, width, dtype=np.int32)),
        pa.array(values.reshape(-1), pa.uint8()),
    )
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def _export_table(samples: list[dict], cfg: DistillKitConfig, schema: pa.Schema) -> pa.Table:
    # DistillKit row j = distribution of token j+1: our rows 0..T-2 (the last predicts nothing)
    ids = np.concatenate([s["topk_ids"][:-1] for s in samples]).astype(np.int64)
    lps = np.concatenate([s["topk_logprobs"][:-1] for s in samples])
    counts = [len(s["input_ids"]) - 1 for s in samples]
    ix_bytes, lp_bytes = encode_positions(ids, lps, cfg)
    arrays = [
        pa.array([np.asarray(s["input_ids"], np.uint64) for s in samples], pa.list_(pa.uint64())),
        _nested(lp_bytes, counts, cfg.logprob_bytes),
        _nested(ix_bytes, counts, cfg.index_bytes),
    ]
    masks = [np.asarray(s["loss_mask"][:-1]) for s in samples]
    if not all(mk.all() for mk in masks):
        labels = []
        for s, mk in zip(samples, masks):
            lab = np.full(len(s["input_ids"]), -100, np.int64)
            lab[1:] = np.where(mk, s["input_ids"][1:], -100)
            labels.append(lab)
        arrays.append(pa.array(labels, pa.list_(pa.int64())))
        schema = schema.append(pa.field("labels", pa.list_(pa.int64())))
    return pa.Table.from_arrays(arrays, schema=schema)
