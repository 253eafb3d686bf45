"""Axolotl KD datasets <-> logitcache caches.

Axolotl's KD trainer (``axolotl.integrations.kd``) reads tokenised rows with ``input_ids``,
``labels``, ``attention_mask`` and per position ``target_token_ids`` / ``target_logprobs`` /
``target_mask`` (lists of k), one target row per input token: row j is the teacher's
distribution over ``input_ids[j + 1]``, ``target_mask[j]`` is 0 where ``labels[j + 1] == -100``,
and the last row is padding (a large negative log-prob, ``-1e9``, with mask 0). That is our
alignment, so rows map one to one. These are the rows its ``kd.chat_template`` strategy
produces (``axolotl preprocess``), stored as Parquet or JSON lines.

Axolotl renormalises the top-k log-probs over the k entries during preprocessing, so it keeps
no tail either: the tail is derived (``log(1 - sum(exp(topk)))``, near ``log 0`` for
renormalised rows) and marked so in the manifest. Export writes the cache's own log-probs
(normalised over the full vocabulary; Axolotl's ``kd_normalize_topk``, on by default,
renormalises them) with ``-inf`` written as Axolotl's finite pad ``-1e9``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import pyarrow as pa
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
from logitcache.storage import redact_uri

log = logging.getLogger(__name__)
REQUIRED = ("input_ids", "target_token_ids", "target_logprobs")
PAD_LOGPROB = -1e9  # Axolotl's LOGPROB_PAD_VALUE: finite so 0 * pad is never NaN
ROWS_PER_UNIT = 1024


def _read(fs, path: str) -> pa.Table:
    if path.endswith(".parquet"):
        with fs.open(path, "rb") as fh:
            return pq.read_table(fh)
    import pyarrow.json as pj

    with fs.open(path, "rb") as fh:
        return pj.read_json(fh)


def _samples(table: pa.Table, rel: str, first_row: int, k: int) -> list[dict]:
    key = file_key(rel)
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    out = []
    for r, toks in enumerate(cols["input_ids"]):
        row = first_row + r
        t = len(toks)
        ids_rows, lp_rows = cols["target_token_ids"][r], cols["target_logprobs"][r]
        if len(ids_rows) != t or len(lp_rows) != t:
            raise ConvertError(
                f"{rel}: row {row} has {t} input_ids but {len(ids_rows)} target_token_ids and "
                f"{len(lp_rows)} target_logprobs rows; Axolotl KD rows hold one target row per "
                "input token. Preprocess the dataset with Axolotl's kd.chat_template strategy."
            )
        try:
            ids = np.asarray(ids_rows, np.int64)
            lps = np.asarray(lp_rows, np.float64)
        except ValueError:
            ids = lps = None
        if ids is None or ids.shape != (t, k) or lps.shape != (t, k):
            raise ConvertError(
                f"{rel}: row {row} does not hold {k} targets at every position (the first row "
                f"has {k}); a cache has one k. Re-export the dataset with one top-k."
            )
        mask = np.ones(t, bool)
        if "target_mask" in cols and cols["target_mask"][r] is not None:
            mask = np.asarray(cols["target_mask"][r]).reshape(t, k).any(axis=1)
        elif "labels" in cols and cols["labels"][r] is not None:
            mask[: t - 1] = np.asarray(cols["labels"][r][1:t]) != -100
        mask[-1] = False
        lp32 = lps.astype(np.float32)
        out.append(
            {
                "sample_id": f"ax-{key}-{row:08d}",
                "input_ids": np.asarray(toks, np.int64).astype(np.int32),
                "loss_mask": mask,
                "topk_ids": ids.astype(np.int32),
                "topk_logprobs": lp32,
                "tail_logmass": tail_from_topk(lp32),
            }
        )
    return out


def plan_import(src: str, *, storage_options: Any = None, info=None, **_: Any) -> ConvertPlan:
    fs, _root, files = list_sources(src, (".parquet", ".jsonl", ".json"), storage_options)
    units, prov, seq_len, k, vocab = [], [], 0, None, 0
    for f in files:
        table = _read(fs, f.path)
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise ConvertError(
                f"{f.rel}: missing column(s) {missing}; an Axolotl KD dataset (after "
                f"preprocessing) has {list(REQUIRED)} plus labels / target_mask"
            )
        if table.num_rows == 0:
            continue
        if k is None:
            first = table.column("target_token_ids")[0].as_py()
            k = len(first[0]) if first else 0
            if k == 0:
                raise ConvertError(f"{f.rel}: row 0 has no targets")
        lengths = [len(x) for x in table.column("input_ids").to_pylist()]
        seq_len = max(seq_len, max(lengths))
        ids_max = max(
            (max((max(p) for p in rows if p), default=0) for rows in
             table.column("target_token_ids").to_pylist()),
            default=0,
        )  # fmt: skip
        in_max = max((max(x) for x in table.column("input_ids").to_pylist() if x), default=0)
        vocab = max(vocab, ids_max + 1, in_max + 1)
        for start in range(0, table.num_rows, ROWS_PER_UNIT):
            units.append(
                (
                    f"ax-{file_key(f.rel)}-{start // ROWS_PER_UNIT:05d}",
                    _loader(fs, f, start, k),
                )
            )
        prov.append({"path": f.rel, "bytes": f.size, "sha256": file_sha256(fs, f.path)})
    if not units:
        raise ConvertError(f"{src}: the dataset holds no rows")
    width = info.width if info is not None else vocab
    if info is not None:
        check_width(info, vocab, f"{src} (largest token id {vocab - 1})")
    fingerprint = hashlib.sha256("".join(p["sha256"] for p in prov).encode()).hexdigest()[:16]
    provenance = {
        "format": "axolotl",
        "source": redact_uri(src),
        "config": {"top_k": k, "columns": list(REQUIRED) + ["labels", "target_mask"]},
        "files": prov,
        "fingerprint": fingerprint,
        "tail": "derived: log(1 - sum(exp(topk_logprobs))); Axolotl stores no tail (and "
        "renormalises the top-k)",
    }
    return ConvertPlan(
        fmt="axolotl",
        top_k=k,
        vocab_size=width,
        seq_len=seq_len,
        units=units,
        provenance=provenance,
    )


def _loader(fs, f, start: int, k: int):
    def load() -> list[dict]:
        table = _read(fs, f.path).slice(start, ROWS_PER_UNIT)
        return _samples(table, f.rel, start, k)

    return load


# -- export -------------------------------------------------------------------------------
def export(cache_uri: str, out: str, *, storage_options: Any = None, **_: Any) -> dict[str, Any]:
    """Write the cache as Axolotl KD rows, one Parquet file per cache row group."""
    fs, root = prepare_out_dir(out)
    files = rows = 0
    for _cache, samples in iter_cache_rows(cache_uri, storage_options):
        table = _export_table(samples)
        with fs.open(f"{root}/data-{files:05d}.parquet", "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        files += 1
        rows += len(samples)
    log.info("exported %d rows in %d files to %s (Axolotl KD rows)", rows, files, out)
    return {"files": files, "rows": rows}


def _export_table(samples: list[dict]) -> pa.Table:
    i64 = pa.list_(pa.int64())
    input_ids, labels, attn, t_ids, t_lp, t_mask = [], [], [], [], [], []
    for s in samples:
        ids = np.asarray(s["input_ids"], np.int64)
        mask = np.asarray(s["loss_mask"], bool)
        lab = np.full(len(ids), -100, np.int64)
        lab[1:] = np.where(mask[:-1], ids[1:], -100)
        lp = np.where(np.isneginf(s["topk_logprobs"]), PAD_LOGPROB, s["topk_logprobs"])
        k = lp.shape[1]
        input_ids.append(ids)
        labels.append(lab)
        attn.append(np.ones(len(ids), np.int64))
        t_ids.append(np.asarray(s["topk_ids"], np.int64))
        t_lp.append(lp.astype(np.float32))
        t_mask.append(np.repeat(mask[:, None], k, axis=1).astype(np.int64) * (lp > PAD_LOGPROB / 2))
    return pa.table(
        {
            "input_ids": pa.array(input_ids, i64),
            "labels": pa.array(labels, i64),
            "attention_mask": pa.array(attn, i64),
            "target_token_ids": pa.array([list(r) for r in t_ids], pa.list_(i64)),
            "target_logprobs": pa.array([list(r) for r in t_lp], pa.list_(pa.list_(pa.float32()))),
            "target_mask": pa.array([list(r) for r in t_mask], pa.list_(i64)),
        }
    )
