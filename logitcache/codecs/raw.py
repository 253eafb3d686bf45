"""``raw``: lossless and self-explanatory; any Parquet reader sees plain numbers.

Ids are int32 and log-probs float32 in list columns, left to Parquet's zstd. It is the
reference the compact codecs are measured against, and the choice when exactness matters more
than bytes (e.g. debugging a teacher).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from logitcache.codecs.base import Codec, CodecContext, PayloadBatch
from logitcache.codecs.util import flat_list, list_values, row_offsets


class RawCodec(Codec):
    name = "raw"
    lossless = True

    def __init__(self) -> None:  # no parameters: a typo in a spec must not pass silently
        super().__init__()

    def fields(self, ctx: CodecContext) -> list[pa.Field]:
        fields = []
        if ctx.top_k > 0:
            fields += [
                pa.field("topk_ids", pa.list_(pa.int32())),
                pa.field("topk_logprobs", pa.list_(pa.float32())),
                pa.field("tail_logmass", pa.list_(pa.float32())),
            ]
        if ctx.rs_samples > 0:
            fields += [
                pa.field("rs_nunique", pa.list_(pa.int32())),
                pa.field("rs_ids", pa.list_(pa.int32())),
                pa.field("rs_counts", pa.list_(pa.int32())),
            ]
        return fields

    def encode(self, batch: PayloadBatch, ctx: CodecContext) -> dict[str, pa.Array]:
        out: dict[str, pa.Array] = {}
        pos = row_offsets(batch.lengths)
        if ctx.top_k > 0:
            k = ctx.top_k
            out["topk_ids"] = flat_list(batch.topk_ids.astype(np.int32).reshape(-1), pos * k)
            out["topk_logprobs"] = flat_list(
                batch.topk_logprobs.astype(np.float32).reshape(-1), pos * k
            )
            out["tail_logmass"] = flat_list(batch.tail_logmass.astype(np.float32), pos)
        if ctx.rs_samples > 0:
            nunique = batch.rs_nunique.astype(np.int32)
            draws = np.concatenate([[0], np.cumsum(nunique)])[pos]
            out["rs_nunique"] = flat_list(nunique, pos)
            out["rs_ids"] = flat_list(batch.rs_ids.astype(np.int32), draws)
            out["rs_counts"] = flat_list(batch.rs_counts.astype(np.int32), draws)
        return out

    def decode(
        self, columns: dict[str, pa.Array], lengths: np.ndarray, ctx: CodecContext
    ) -> PayloadBatch:
        n = int(lengths.sum())
        k = ctx.top_k
        if k > 0:
            ids = list_values(columns["topk_ids"], np.int32).reshape(n, k)
            lps = list_values(columns["topk_logprobs"], np.float32).reshape(n, k)
            tail = list_values(columns["tail_logmass"], np.float32)
        else:
            ids = np.zeros((n, 0), np.int32)
            lps = np.zeros((n, 0), np.float32)
            tail = np.zeros(n, np.float32)
        batch = PayloadBatch(lengths=lengths, topk_ids=ids, topk_logprobs=lps, tail_logmass=tail)
        if ctx.rs_samples > 0:
            batch.rs_nunique = list_values(columns["rs_nunique"], np.int32)
            batch.rs_ids = list_values(columns["rs_ids"], np.int32)
            batch.rs_counts = list_values(columns["rs_counts"], np.int32)
        return batch
