"""docs/format.md's ``lc1`` section is enough to write a decoder: this file holds one, written
from the text alone in plain Python loops, and checks it against the library's compiled one."""

from __future__ import annotations

import base64
import math

import numpy as np
import pyarrow as pa
import pytest
import zstandard

from logitcache.codecs import CodecContext, get_codec
from logitcache.errors import CodecError
from logitcache.format.shard import decode_table, encode_table


# -- the reference decoder (docs/format.md, "### `lc1`") ----------------------------------------
def _spec_params(spec: str) -> dict[str, str]:
    name, _, body = spec.partition(":")
    assert name == "lc1"
    return dict(item.split("=", 1) for item in body.split(","))


def _id_of(ranks_text: str, vocab: int) -> list[int]:
    if ranks_text == "id":
        return list(range(vocab))
    body = ranks_text[1:]
    raw = zstandard.ZstdDecompressor().decompress(
        base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), max_output_size=1 << 26
    )
    listed = [int(x) for x in np.frombuffer(raw, "<u4")]
    seen = set(listed)
    return listed + [i for i in range(vocab) if i not in seen]


def _planes(blob: bytes, m: int, p: int) -> list[int]:
    assert len(blob) == p * m, "corrupt blob"
    return [sum(blob[j * m + i] << 8 * (p - 1 - j) for j in range(p)) for i in range(m)]


def _bytes_for(max_value: int) -> int:
    return max(1, (max_value.bit_length() + 7) // 8)


def _dequantise(q: int, step: float, knee: float, ratio: float) -> float:
    if q == 65535:
        return -math.inf
    f = -q * step
    low_knee = knee - 2 * math.log(ratio)
    f_low_knee = knee - 2 * (1 - 1 / ratio)
    if f >= knee:
        x = f
    elif f >= f_low_knee:
        x = knee + 2 * math.log(1 - (knee - f) / 2)
    else:
        x = low_knee + (f - f_low_knee) * ratio
    return float(np.float32(x))


def reference_decode(spec: str, row: dict, length: int, vocab: int, k: int, n_draws: int):
    """One row's blobs (``lc1_*`` -> bytes) -> per-position lists, as the spec describes."""
    prm = _spec_params(spec)
    step, knee, ratio = float(prm["step"]), float(prm["knee"]), float(prm["ratio"])
    id_of = _id_of(prm["ranks"], vocab)
    p = _bytes_for(vocab - 1)
    out: dict[str, list] = {"ids": [], "lps": [], "tail": [], "rs": []}
    if k:
        m = length * k
        coded, deltas = _planes(row["lc1_ids"], m, p), _planes(row["lc1_lp"], m, 2)
        for pos in range(length):
            q = rank = prev_q = 0
            ids, lps = [], []
            for j in range(k):
                q = (q + deltas[pos * k + j]) % 65536
                start = j < 2 or q != prev_q
                rank = coded[pos * k + j] if start else rank + coded[pos * k + j]
                ids.append(id_of[rank])
                lps.append(_dequantise(q, step, knee, ratio))
                prev_q = q
            out["ids"].append(ids)
            out["lps"].append(lps)
        bits = _planes(row["lc1_tail"], length, 2)
        out["tail"] = [float(np.array([b], np.uint16).view(np.float16)[0]) for b in bits]
    if n_draws:
        c = _bytes_for(n_draws - 1)
        m = len(row["lc1_rs_ids"]) // p
        coded, counts = _planes(row["lc1_rs_ids"], m, p), _planes(row["lc1_rs_counts"], m, c)
        draws: dict[int, int] = {}
        total = rank = 0
        for i in range(m):
            rank = coded[i] if not draws else rank + coded[i]
            draws[id_of[rank]] = counts[i] + 1
            total += counts[i] + 1
            assert total <= n_draws, "corrupt: counts overshoot N"
            if total == n_draws:
                out["rs"].append(draws)
                draws, total = {}, 0
        assert not draws and len(out["rs"]) == length, "corrupt: row ends mid-position"
    return out


# -- tests --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "vocab,top_k,rs,spec",
    [
        (700, 6, 9, "lc1"),
        (70_000, 5, 300, "lc1:step=0.25,knee=-3,ratio=2"),  # 3 id planes, 2 count planes
        (700, 0, 4, "lc1"),
    ],
)
def test_reference_decoder_matches_library(vocab, top_k, rs, spec, sample_factory):
    ctx = CodecContext(vocab_size=vocab, top_k=top_k, rs_samples=rs)
    samples = sample_factory(ctx, lengths=(5, 1, 3))
    codec = get_codec(spec).calibrate(samples, ctx)
    table = encode_table(samples, codec, ctx)
    got = list(decode_table(table, codec, ctx))
    for r, (sample, lib) in enumerate(zip(samples, got)):
        blobs = {f.name: table.column(f.name)[r].as_py() for f in codec.fields(ctx)}
        ref = reference_decode(codec.spec, blobs, len(sample["input_ids"]), vocab, top_k, rs)
        if top_k:
            np.testing.assert_array_equal(lib["topk_ids"], np.array(ref["ids"]))
            np.testing.assert_allclose(lib["topk_logprobs"], np.array(ref["lps"]), rtol=1e-6)
            np.testing.assert_array_equal(lib["tail_logmass"], np.array(ref["tail"], np.float32))
        if rs:
            lib_rs = [
                {int(i): int(c) for i, c in zip(ids, counts) if c}
                for ids, counts in zip(lib["rs_ids"], lib["rs_counts"])
            ]
            assert lib_rs == ref["rs"]


def test_documented_sampled_example_bytes():
    """The worked example in docs/format.md: N=4, draws {7: 3, 9: 1} then {2: 4}."""
    ctx = CodecContext(vocab_size=300, top_k=0, rs_samples=4)
    sample = {
        "sample_id": "s",
        "input_ids": np.array([1, 2], np.int32),
        "loss_mask": np.array([True, False]),
        "topk_ids": np.zeros((2, 0), np.int32),
        "topk_logprobs": np.zeros((2, 0), np.float32),
        "tail_logmass": np.zeros(2, np.float32),
        "rs_ids": np.array([[9, 7], [2, 0]], np.int32),
        "rs_counts": np.array([[1, 3], [4, 0]], np.int32),
    }
    table = encode_table([sample], get_codec("lc1"), ctx)
    assert table.column("lc1_rs_ids")[0].as_py() == bytes([0, 0, 0, 7, 2, 2])
    assert table.column("lc1_rs_counts")[0].as_py() == bytes([2, 0, 3])


def _sampled_table(ctx, sample_factory):
    samples = sample_factory(ctx, lengths=(4,))
    return get_codec("lc1"), encode_table(samples, get_codec("lc1"), ctx)


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda c: bytes([min(255, c[0] + 60)]) + c[1:], "overshoot|positions"),  # sum > N
        (lambda c: c[:-1] + bytes([0]) if c[-1] else c[:-1] + bytes([1]), "overshoot|positions"),
        (lambda c: c[:-1], "expected|bytes"),  # counts blob no longer matches the ids blob
    ],
)
def test_damaged_sampled_counts_raise(damage, match, sample_factory):
    ctx = CodecContext(vocab_size=300, top_k=0, rs_samples=50)
    codec, table = _sampled_table(ctx, sample_factory)
    blob = table.column("lc1_rs_counts")[0].as_py()
    bad = table.set_column(
        table.schema.get_field_index("lc1_rs_counts"),
        "lc1_rs_counts",
        pa.array([damage(blob)], pa.large_binary()),
    )
    with pytest.raises(CodecError, match=match):
        list(decode_table(bad, codec, ctx))


def test_rank_beyond_vocabulary_is_reported(sample_factory):
    ctx = CodecContext(vocab_size=300, top_k=4, rs_samples=0)
    samples = sample_factory(ctx, lengths=(3,))
    codec = get_codec("lc1")
    table = encode_table(samples, codec, ctx)
    blob = bytearray(table.column("lc1_ids")[0].as_py())
    blob[0] = 0xFF  # high byte of the first rank: 65280+ >= 300
    bad = table.set_column(
        table.schema.get_field_index("lc1_ids"),
        "lc1_ids",
        pa.array([bytes(blob)], pa.large_binary()),
    )
    with pytest.raises(CodecError, match="vocab_size"):
        list(decode_table(bad, codec, ctx))


def test_counts_that_do_not_sum_to_n_are_refused(sample_factory):
    ctx = CodecContext(vocab_size=300, top_k=0, rs_samples=10)
    (sample,) = sample_factory(ctx, lengths=(2,))
    sample["rs_counts"] = sample["rs_counts"].copy()
    sample["rs_counts"][0, 0] += 1
    with pytest.raises(CodecError, match="sum to rs_samples"):
        encode_table([sample], get_codec("lc1"), ctx)
