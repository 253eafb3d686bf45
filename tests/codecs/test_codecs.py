"""Every registered codec round-trips; lc1's lossy error stays inside its declared bound."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitcache.codecs import CodecContext, PayloadBatch, available, get_codec
from logitcache.codecs.quant import LogQuantiser
from logitcache.codecs.ranks import RankTable
from logitcache.errors import CodecError
from logitcache.format.shard import decode_table, encode_table, samples_to_batch

SPECS = ["raw", "lc1", "lc1:step=0", "lc1:step=0.25,knee=-3,ratio=1"]


def _per_position(ids, lps):
    return [dict(zip(i.tolist(), v.tolist())) for i, v in zip(ids, lps)]


def _check_close(codec, expected, got, k):
    """Same id set per position, argmax first, log-probs within the codec's bound."""
    if k == 0:
        assert got["topk_ids"].shape == (len(expected["input_ids"]), 0)
        return
    assert got["topk_ids"].dtype == np.int32 and got["topk_logprobs"].dtype == np.float32
    np.testing.assert_array_equal(got["topk_ids"][:, 0], expected["topk_ids"][:, 0])
    for e, g in zip(
        _per_position(expected["topk_ids"], expected["topk_logprobs"]),
        _per_position(got["topk_ids"], got["topk_logprobs"]),
    ):
        assert set(e) == set(g)
        lp = np.array([e[i] for i in e], np.float64)
        lp_hat = np.array([g[i] for i in e], np.float64)
        if codec.lossless:
            np.testing.assert_array_equal(lp, lp_hat)
        else:
            _assert_within_bound(codec.quantiser, lp, lp_hat)
    # the stored order is most probable first
    assert (np.diff(got["topk_logprobs"], axis=1) <= 0).all()
    tail, tail_hat = expected["tail_logmass"], got["tail_logmass"]
    if codec.lossless:
        np.testing.assert_array_equal(tail, tail_hat)
    else:
        np.testing.assert_array_equal(tail.astype(np.float16).astype(np.float32), tail_hat)


def _assert_within_bound(q: LogQuantiser, lp, lp_hat):
    lp = np.asarray(lp, np.float64)
    lp_hat = np.asarray(lp_hat, np.float64)
    ninf = np.isneginf(lp)
    np.testing.assert_array_equal(np.isneginf(lp_hat), ninf)
    clipped = np.clip(lp[~ninf], q.floor, 0.0)
    err = np.abs(lp_hat[~ninf] - clipped)
    bound = q.bound(clipped, lp_hat[~ninf]) * (1 + 1e-6) + 1e-5 * np.abs(clipped) + 1e-7
    assert (err <= bound).all(), (err.max(), clipped[np.argmax(err - bound)])


def _check_sampled(expected, got):
    for ei, ec, gi, gc in zip(
        expected["rs_ids"], expected["rs_counts"], got["rs_ids"], got["rs_counts"]
    ):
        e = {int(i): int(c) for i, c in zip(ei, ec) if c}
        g = {int(i): int(c) for i, c in zip(gi, gc) if c}
        assert e == g


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("top_k,rs", [(4, 0), (3, 20), (0, 20), (64, 50)])
def test_roundtrip_through_tables(spec, top_k, rs, sample_factory):
    ctx = CodecContext(vocab_size=700, top_k=top_k, rs_samples=rs)
    samples = sample_factory(ctx, lengths=(7, 1, 12))
    codec = get_codec(spec).calibrate(samples, ctx)
    rebuilt = get_codec(codec.spec)  # the spec alone rebuilds the codec, rank table included
    assert rebuilt.spec == codec.spec
    table = encode_table(samples, codec, ctx)
    got = list(decode_table(table, rebuilt, ctx))
    assert [g["sample_id"] for g in got] == [s["sample_id"] for s in samples]
    for e, g in zip(samples, got):
        np.testing.assert_array_equal(e["input_ids"], g["input_ids"])
        _check_close(codec, e, g, top_k)
        if rs:
            _check_sampled(e, g)
            assert (g["rs_counts"].sum(axis=1) == rs).all()
    # a row slice decodes on its own
    (one,) = decode_table(table.slice(2, 1), rebuilt, ctx)
    _check_close(codec, samples[2], one, top_k)


def test_every_registered_codec_is_tested():
    assert {s.split(":")[0] for s in SPECS} == set(available())


def test_lc1_is_smaller_than_raw_and_lossless_mode_is_exact(sample_factory):
    ctx = CodecContext(vocab_size=5000, top_k=32, rs_samples=0)
    samples = sample_factory(ctx, lengths=(64, 64))
    sizes = {}
    for spec in ("raw", "lc1", "lc1:step=0"):
        codec = get_codec(spec).calibrate(samples, ctx)
        sizes[spec] = encode_table(samples, codec, ctx).nbytes
    assert sizes["lc1"] < sizes["lc1:step=0"] < sizes["raw"]


# -- properties ------------------------------------------------------------------------------
@st.composite
def payloads(draw):
    vocab = draw(st.sampled_from([2, 300, 65_536, 65_537, 131_072, 262_144]))
    k = draw(st.integers(0, min(1024, vocab)))
    rs = draw(st.sampled_from([0, 0, 1, 50, 300]))
    if k == 0 and rs == 0:
        rs = 50
    lengths = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    n = sum(lengths)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rows = [rng.choice(vocab, size=k, replace=False) for _ in range(n)]
    ids = np.stack(rows) if n else np.zeros((0, k), np.int64)
    kind = draw(st.sampled_from(["normal", "ties", "extreme", "unordered"]))
    lps = -np.abs(rng.standard_normal((n, k))) * draw(st.sampled_from([0.5, 5.0, 40.0]))
    if kind == "ties":
        lps = np.round(lps * 2) / 2
    elif kind == "extreme" and lps.size:
        special = np.array([-np.inf, -745.0, -103.9, -87.5, -1e-45, 0.0, -1e5, -3e38])
        mask = rng.random(lps.shape) < 0.3
        lps[mask] = rng.choice(special, size=int(mask.sum()))
    lps = -np.sort(-lps, axis=1)  # most probable first
    if kind == "unordered" and k > 2:  # the codec must not rely on the order after the argmax
        lps[:, 1:] = rng.permuted(lps[:, 1:], axis=1)
    tail = rng.choice([-np.inf, -1e-3, -2.0, -30.0, -700.0], size=n)
    batch = PayloadBatch(
        lengths=np.array(lengths, np.int64),
        topk_ids=ids.astype(np.int64),
        topk_logprobs=lps.astype(np.float32),
        tail_logmass=tail.astype(np.float32),
    )
    if rs:
        nunique = rng.integers(1, min(rs, vocab, 40) + 1, size=n)
        rs_ids, rs_counts = [], []
        for u in nunique:
            rs_ids.append(rng.choice(vocab, size=u, replace=False))
            c = np.ones(u, np.int64)
            np.add.at(c, rng.integers(0, u, size=rs - u), 1)
            rs_counts.append(c)
        batch.rs_nunique = nunique.astype(np.int64)
        batch.rs_ids = np.concatenate(rs_ids or [np.zeros(0, np.int64)]).astype(np.int64)
        batch.rs_counts = np.concatenate(rs_counts or [np.zeros(0, np.int64)]).astype(np.int64)
    return CodecContext(vocab_size=vocab, top_k=k, rs_samples=rs), batch


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads(), st.sampled_from(SPECS))
def test_property_roundtrip(payload, spec):
    ctx, batch = payload
    codec = get_codec(spec)
    if ctx.vocab_size > 300 and spec.startswith("lc1"):  # exercise a fitted table on big vocabs
        codec = codec.calibrate(
            [{"topk_ids": batch.topk_ids, "rs_ids": batch.rs_ids, "rs_counts": batch.rs_counts}],
            ctx,
        )
    cols = codec.encode(batch, ctx)
    out = codec.decode(cols, batch.lengths, ctx)
    n, k = batch.num_positions, ctx.top_k
    assert out.topk_ids.shape == (n, k) and out.topk_logprobs.shape == (n, k)
    for p in range(n):
        e = dict(zip(batch.topk_ids[p].tolist(), batch.topk_logprobs[p].tolist()))
        g = dict(zip(out.topk_ids[p].tolist(), out.topk_logprobs[p].tolist()))
        assert set(e) == set(g)
        if k:
            assert out.topk_ids[p, 0] == batch.topk_ids[p, 0]
        lp = np.array(list(e.values()))
        lp_hat = np.array([g[i] for i in e])
        if codec.lossless:
            np.testing.assert_array_equal(lp, lp_hat)
        else:
            _assert_within_bound(codec.quantiser, lp, lp_hat)
    if k and not codec.lossless:
        expected_tail = batch.tail_logmass.astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(out.tail_logmass, expected_tail)
    elif k:
        np.testing.assert_array_equal(out.tail_logmass, batch.tail_logmass)
    if ctx.rs_samples:
        np.testing.assert_array_equal(out.rs_nunique, batch.rs_nunique)
        off = np.concatenate([[0], np.cumsum(batch.rs_nunique)])
        for p in range(n):
            a, b = off[p], off[p + 1]
            e = dict(zip(batch.rs_ids[a:b].tolist(), batch.rs_counts[a:b].tolist()))
            g = dict(zip(out.rs_ids[a:b].tolist(), out.rs_counts[a:b].tolist()))
            assert e == g


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=-1e4, max_value=0.0, allow_subnormal=True),
    st.sampled_from([(0.125, -5.0, 8.0), (0.25, 0.0, 1.0), (0.05, -2.0, 64.0)]),
)
def test_quantiser_error_bound(lp, params):
    step, knee, ratio = params
    q = LogQuantiser(step=step, knee=knee, ratio=ratio)
    lp_hat = q.dequantise(q.quantise(np.array([lp])))
    _assert_within_bound(q, np.array([lp]), lp_hat)
    if lp >= knee:
        assert abs(float(lp_hat[0]) - max(lp, q.floor)) <= step / 2 + 1e-5


def test_quantise_kernel_follows_the_spec_formula():
    """The compiled quantiser gives the same level as the numpy rendering of the spec."""
    rng = np.random.default_rng(0)
    edges = [-np.inf, np.inf, 0.0, -0.0, -1e-45, -5.0, -5.000001, -9.1589, -200.0, -1e4, -3e38]
    for params in [(0.125, -5.0, 8.0), (0.25, 0.0, 1.0), (0.05, -2.0, 64.0)]:
        q = LogQuantiser(step=params[0], knee=params[1], ratio=params[2])
        x = np.concatenate(
            [-np.abs(rng.standard_normal(20_000)) * s for s in (0.5, 5.0, 60.0)]
            + [np.array(edges + [q.floor, q.floor * 1.01])]
        )
        for dtype in (np.float32, np.float64):
            v = x.astype(dtype)
            np.testing.assert_array_equal(q.quantise(v), q.quantise_reference(v))


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        "nope",
        "lc1:step=-1",
        "lc1:step=abc",
        "lc1:knee=1",
        "lc1:ratio=0.5",
        "lc1:step=0.001,ratio=1",
        "lc1:ranks=!!",
        "lc1:ranks=zAAAA",
        "lc1:colour=red",
        "lc1:step",
        "raw:step=1",
    ],
)
def test_bad_specs_raise_codec_error(spec):
    with pytest.raises(CodecError):
        get_codec(spec)


def test_bad_inputs_raise_codec_error():
    ctx = CodecContext(vocab_size=10, top_k=2)
    codec = get_codec("lc1")
    good = dict(
        lengths=np.array([1]),
        topk_ids=np.array([[1, 2]]),
        topk_logprobs=np.array([[-0.1, -3.0]], np.float32),
        tail_logmass=np.array([-3.0], np.float32),
    )
    codec.encode(PayloadBatch(**good), ctx)
    with pytest.raises(CodecError, match="vocabulary"):
        codec.encode(PayloadBatch(**{**good, "topk_ids": np.array([[1, 10]])}), ctx)
    with pytest.raises(CodecError, match="NaN"):
        codec.encode(PayloadBatch(**{**good, "topk_logprobs": np.array([[np.nan, -1.0]])}), ctx)
    with pytest.raises(CodecError, match="vocabulary has"):
        table = RankTable(np.array([50])).to_text()
        get_codec(f"lc1:ranks={table}").encode(PayloadBatch(**good), ctx)
    cols = codec.encode(PayloadBatch(**good), ctx)
    cols["lc1_ids"] = pa.array([b"\x00"], pa.large_binary())
    with pytest.raises(CodecError, match="expected"):
        codec.decode(cols, np.array([1]), ctx)


def test_rank_table_is_deterministic_and_survives_text():
    rng = np.random.default_rng(0)
    ids = rng.zipf(1.3, size=(500, 16)) % 262_144
    a = RankTable.fit([ids], max_ids=1000)
    b = RankTable.fit([ids[:250], ids[250:]], max_ids=1000)
    np.testing.assert_array_equal(a.listed, b.listed)
    c = RankTable.from_text(a.to_text())
    assert c.sha256 == a.sha256
    rank_of, id_of = c.maps(262_144)
    np.testing.assert_array_equal(id_of[rank_of], np.arange(262_144))
    counts = np.bincount(ids.reshape(-1), minlength=262_144)
    assert counts[id_of[0]] == counts.max()


def test_samples_to_batch_with_lc1_keeps_row_lengths(sample_factory):
    ctx = CodecContext(vocab_size=300, top_k=5, rs_samples=10)
    samples = sample_factory(ctx, lengths=(3, 4))
    batch = samples_to_batch(samples, ctx)
    codec = get_codec("lc1")
    out = codec.decode(codec.encode(batch, ctx), batch.lengths, ctx)
    np.testing.assert_array_equal(out.lengths, [3, 4])
