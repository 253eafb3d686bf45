"""DistillKit interoperability against fixtures written by an *independent* encoder of its bit
layout, written here from the specification (DistillKit's ``distillkit/compression/``
modules): Python integers for the MSB-first bit packing, ``struct`` for the IEEE bytes, and
the expected decoded values computed in float64 beside it. Nothing here calls the library's
own encoder, so a shared misreading of the layout cannot cancel out."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from logitcache.cli import main as cli
from logitcache.format import open_cache

D = 512  # the tiny teacher's vocabulary: 9-bit indices
K = 12


# -- the independent encoder / decoder ---------------------------------------------------
def pack(values, bits: int) -> list[int]:
    acc = 0
    for v in values:
        acc = (acc << bits) | int(v)
    total = len(values) * bits
    pad = (-total) % 8
    return list((acc << pad).to_bytes((total + pad) // 8, "big"))


def unpack(data, bits: int, count: int) -> list[int]:
    acc = int.from_bytes(bytes(data), "big")
    total = len(data) * 8
    return [(acc >> (total - (i + 1) * bits)) & ((1 << bits) - 1) for i in range(count)]


FMT = {"float32": "<f", "float16": "<e", "float64": "<d"}


def fbytes(x: float, dtype: str) -> list[int]:
    if dtype == "bfloat16":  # the top half of the float32 (x is chosen exactly representable)
        return list(struct.pack("<f", x)[2:4])
    return list(struct.pack(FMT[dtype], x))


def fvalue(data, dtype: str) -> float:
    if dtype == "bfloat16":
        return struct.unpack("<f", b"\0\0" + bytes(data))[0]
    return struct.unpack(FMT[dtype], bytes(data))[0]


def term(t, x: float) -> float:
    return math.sqrt(x) if t == "sqrt" else math.exp(x) if t == "exp" else x**t


def encode_position(ids, exact, coeffs, bins, cfg):
    """One position's (indices bytes, logprob bytes) and the float64 values they decode to.
    ``exact``: stored exact values; ``coeffs``: stored coefficients; ``bins``: (scale, codes)."""
    ix = pack(ids, max(1, (cfg["d"] - 1).bit_length()))
    lp = []
    for x in exact:
        lp += fbytes(x, cfg["exact_dtype"])
    for c in coeffs:
        lp += fbytes(c, cfg["term_dtype"])
    m = cfg["k"] - cfg["exact_k"]
    residual = [0.0] * m
    slot = 0
    for spec, (scale, codes) in zip(cfg["residual_bins"], bins):
        lp += fbytes(scale, spec["scale_dtype"])
        lp += pack(codes, spec["element_bits"])
        for q in codes:
            bits = spec["element_bits"]
            residual[slot] = (2 * q - 1) * scale if bits == 1 else (q - 2 ** (bits - 1)) * scale
            slot += 1
    fit = [
        sum(c * term(t, float(x)) for c, t in zip(coeffs, cfg["polynomial_terms"]))
        for x in range(m)
    ]
    values = list(exact) + [f + r for f, r in zip(fit, residual)] if m else list(exact)
    if cfg["delta_encoding"]:  # the running sum is rounded to exact_dtype
        values = np.cumsum(values)
        values = list(values.astype(np.float16) if cfg["exact_dtype"] == "float16" else values)
    return ix, lp, values


def decode_position(ix, lp, cfg):
    """The reference decoder (for configurations without residual bins)."""
    ids = unpack(ix, (cfg["d"] - 1).bit_length(), cfg["k"])
    w = 2 if cfg["exact_dtype"] in ("bfloat16", "float16") else 4
    exact = [fvalue(lp[i * w : (i + 1) * w], cfg["exact_dtype"]) for i in range(cfg["exact_k"])]
    pos = cfg["exact_k"] * w
    tw = 4 if cfg["term_dtype"] == "float32" else 8
    coeffs = [
        fvalue(lp[pos + i * tw : pos + (i + 1) * tw], cfg["term_dtype"])
        for i in range(len(cfg["polynomial_terms"]))
    ]
    m = cfg["k"] - cfg["exact_k"]
    fit = [
        sum(c * term(t, float(x)) for c, t in zip(coeffs, cfg["polynomial_terms"]))
        for x in range(m)
    ]
    return ids, exact + fit


def config(**kw):
    base = {
        "d": D, "k": K, "exact_k": 4, "exact_dtype": "bfloat16",
        "polynomial_terms": [0, 1, "sqrt"], "term_dtype": "float32",
        "residual_bins": [
            {"scale_dtype": "float16", "element_bits": 4, "num_elements": 5},
            {"scale_dtype": "float32", "element_bits": 1, "num_elements": 2},
        ],
        "delta_encoding": False, "error_diffusion": False, "normalize_t": False,
    }  # fmt: skip
    return {**base, **kw}


def write_fixture(root: Path, cfg, rows=5, seed=0, lossless=False, labels=False):
    """A DistillKit dataset: ``rows`` sequences (T tokens, T-1 distributions) in 2 files."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "compression_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    expected = []
    for f in range(2):
        recs = {"input_ids": [], "compressed_logprobs": [], "bytepacked_indices": []}
        if labels:
            recs["labels"] = []
        for _ in range(rows):
            t = int(rng.integers(5, 11))
            toks = rng.integers(0, D, size=t).tolist()
            ixs, lps, ids_all, vals_all = [], [], [], []
            for _ in range(t - 1):
                ids = rng.choice(D, size=K, replace=False).tolist()
                if lossless:
                    vals = np.sort(rng.uniform(-12, -0.01, K))[::-1].astype(np.float32).tolist()
                    ix, lp, v = encode_position(ids, vals, [], [], cfg)
                else:
                    m = cfg["k"] - cfg["exact_k"]
                    exact = [
                        -(i + 1) * 0.25 - int(rng.integers(0, 4)) * 0.125
                        for i in range(cfg["exact_k"])
                    ]
                    coeffs = [
                        float(np.float32(x))
                        for x in (-2.0 - rng.random(), -0.25 * rng.random(), -0.5 * rng.random())
                    ][: len(cfg["polynomial_terms"])]
                    bins = []
                    for spec in cfg["residual_bins"]:
                        scale = 0.0625 if spec["scale_dtype"] == "float16" else 0.03125
                        codes = rng.integers(
                            0, 2 ** spec["element_bits"], spec["num_elements"]
                        ).tolist()
                        bins.append((scale, codes))
                    assert m >= sum(b["num_elements"] for b in cfg["residual_bins"])
                    ix, lp, v = encode_position(ids, exact, coeffs, bins, cfg)
                ixs.append(ix)
                lps.append(lp)
                ids_all.append(ids)
                vals_all.append(v)
            recs["input_ids"].append(toks)
            recs["compressed_logprobs"].append(lps)
            recs["bytepacked_indices"].append(ixs)
            lab = list(toks)
            lab[:2] = [-100, -100]  # the first target (token 1) is masked
            if labels:
                recs["labels"].append(lab)
            expected.append({"input_ids": toks, "ids": ids_all, "values": vals_all, "labels": lab})
        schema = [
            pa.field("input_ids", pa.list_(pa.uint64())),
            pa.field("compressed_logprobs", pa.list_(pa.list_(pa.uint8()))),
            pa.field("bytepacked_indices", pa.list_(pa.list_(pa.uint8()))),
        ]
        if labels:
            schema.append(pa.field("labels", pa.list_(pa.int64())))
        pq.write_table(pa.Table.from_pydict(recs, schema=pa.schema(schema)),
                       root / f"data-{f:05d}.parquet", row_group_size=3)  # fmt: skip
    return expected


def convert(src, out, tokenizer, *extra) -> int:
    return cli(["convert", str(src), "--from", "distillkit", "--out", str(out),
                "--tokenizer", str(tokenizer), *extra])  # fmt: skip


@pytest.mark.parametrize(
    "cfg",
    [
        config(),
        config(delta_encoding=True, exact_dtype="float16", polynomial_terms=[0, 1]),
        config(exact_k=K, polynomial_terms=[], residual_bins=[], exact_dtype="float32"),
    ],
    ids=["poly+bins", "delta+fp16", "exact"],
)
def test_library_decoder_reads_the_independent_encoding(cfg):
    from logitcache.convert.distillkit_layout import (
        DistillKitConfig,
        decode_indices,
        decode_logprobs,
    )

    rng = np.random.default_rng(1)
    dk = DistillKitConfig.from_dict(cfg)
    ixs, lps, want_ids, want = [], [], [], []
    for _ in range(20):
        ids = rng.choice(D, size=K, replace=False).tolist()
        m = cfg["k"] - cfg["exact_k"]
        exact = [-(i + 1) * 0.5 for i in range(cfg["exact_k"])]
        coeffs = [float(np.float32(-1.5 - rng.random()))] + [
            float(np.float32(-0.3 * rng.random()))
        ] * (len(cfg["polynomial_terms"]) - 1)
        bins = [(0.0625 if s["scale_dtype"] == "float16" else 0.03125,
                 rng.integers(0, 2 ** s["element_bits"], s["num_elements"]).tolist())
                for s in cfg["residual_bins"]]  # fmt: skip
        ix, lp, v = encode_position(ids, exact, coeffs if m else [], bins, cfg)
        ixs.append(ix), lps.append(lp), want_ids.append(ids), want.append(v)
    assert len(ixs[0]) == dk.index_bytes and len(lps[0]) == dk.logprob_bytes
    got_ids = decode_indices(np.array(ixs, np.uint8), dk)
    got = decode_logprobs(np.array(lps, np.uint8), dk)
    assert got_ids.tolist() == want_ids
    if cfg["delta_encoding"]:  # float16 rounding of a float32 vs float64 sum: one ulp at most
        np.testing.assert_allclose(got, np.array(want, np.float64), rtol=2**-10, atol=0)
    else:
        np.testing.assert_allclose(
            got, np.array(want), rtol=0, atol=2e-5 if cfg["exact_k"] < K else 0
        )
    if cfg["delta_encoding"]:  # the running sum is rounded to exact_dtype, as DistillKit does
        np.testing.assert_array_equal(got, got.astype(np.float16).astype(np.float32))


def test_convert_with_raw_codec_reproduces_decoded_values_and_records_provenance(
    tmp_path, tiny_llama_dir
):
    from logitcache.convert.distillkit_layout import DistillKitConfig, decode_logprobs

    src = tmp_path / "dk"
    cfg = config()
    expected = write_fixture(src, cfg, labels=True)
    out = tmp_path / "cache"
    assert convert(src, out, tiny_llama_dir, "--codec", "raw") == 0
    cache = open_cache(str(out))
    m = cache.manifest
    assert m.top_k == K and m.vocab_size == D and m.capture["tail"] == "derived"
    prov = m.extra["provenance"]
    assert prov["format"] == "distillkit" and prov["config"]["d"] == D
    for f in prov["files"]:
        assert f["sha256"] == hashlib.sha256((src / f["path"]).read_bytes()).hexdigest()
    samples = list(cache.iter_samples())
    assert len(samples) == len(expected)
    dk = DistillKitConfig.from_dict(cfg)
    # rows come in source order (file, row); compare against the independent expectation
    for s, e in zip(samples, expected):
        t = len(e["input_ids"])
        assert s["input_ids"].tolist() == e["input_ids"]
        assert s["topk_ids"][: t - 1].tolist() == e["ids"]
        np.testing.assert_allclose(s["topk_logprobs"][: t - 1], np.array(e["values"]), atol=2e-5)
        # exactly what the layout decodes to: raw stores the decoder's float32 values as-is
        lps = np.array(
            pq.read_table(src / "data-00000.parquet").column("compressed_logprobs")[0].as_py(),
            np.uint8,
        )
        assert lps.shape[1] == dk.logprob_bytes
        assert np.isneginf(s["topk_logprobs"][t - 1]).all() and s["tail_logmass"][t - 1] == 0
        mass = np.exp(s["topk_logprobs"][: t - 1].astype(np.float64)).sum(-1)
        np.testing.assert_allclose(
            s["tail_logmass"][: t - 1], np.log1p(-np.minimum(mass, 1 - 1e-12)), rtol=1e-5
        )
        want_mask = [lab != -100 for lab in e["labels"][1:]] + [False]
        assert s["loss_mask"].tolist() == want_mask
    first = np.array(
        pq.read_table(src / "data-00000.parquet").column("compressed_logprobs")[0].as_py(), np.uint8
    )
    np.testing.assert_array_equal(
        samples[0]["topk_logprobs"][: len(first)], decode_logprobs(first, dk)
    )


def test_lossless_round_trip_reproduces_the_distillkit_bytes(tmp_path, tiny_llama_dir):
    src = tmp_path / "dk"
    cfg = config(exact_k=K, polynomial_terms=[], residual_bins=[], exact_dtype="float32")
    write_fixture(src, cfg, lossless=True)
    assert convert(src, tmp_path / "cache", tiny_llama_dir, "--codec", "raw") == 0
    assert cli(["export", str(tmp_path / "cache"), "--to", "distillkit", "--out", str(tmp_path / "back"),
                "--compression-config", str(src / "compression_config.yaml")]) == 0  # fmt: skip
    back = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "back").glob("*.parquet")))
    orig = pa.concat_tables(pq.read_table(p) for p in sorted(src.glob("*.parquet")))
    for name in ("input_ids", "compressed_logprobs", "bytepacked_indices"):
        assert back.column(name).to_pylist() == orig.column(name).to_pylist(), name
    assert yaml.safe_load((tmp_path / "back" / "compression_config.yaml").read_text())["k"] == K


def test_export_writes_the_recommended_layout_readable_from_the_spec(tmp_path, tiny_llama_dir):
    src = tmp_path / "dk"
    cfg = config(exact_k=K, polynomial_terms=[], residual_bins=[], exact_dtype="float32")
    write_fixture(src, cfg, lossless=True)
    assert convert(src, tmp_path / "cache", tiny_llama_dir, "--codec", "raw") == 0
    assert (
        cli(
            [
                "export",
                str(tmp_path / "cache"),
                "--to",
                "distillkit",
                "--out",
                str(tmp_path / "rec"),
            ]
        )
        == 0
    )
    rec = yaml.safe_load((tmp_path / "rec" / "compression_config.yaml").read_text())
    assert rec == {
        "d": D,
        "k": K,
        "exact_k": K,
        "exact_dtype": "bfloat16",
        "polynomial_terms": [],
        "term_dtype": "float32",
        "residual_bins": [],
        "delta_encoding": False,
        "error_diffusion": False,
        "normalize_t": False,
    }  # fmt: skip  (k=12 <= 16: all exact, no polynomial; k=128 gets 16 + [0,1,2,3,4,sqrt])
    samples = list(open_cache(str(tmp_path / "cache")).iter_samples())
    table = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "rec").glob("*.parquet")))
    for s, ixs, lps in zip(samples, table.column("bytepacked_indices").to_pylist(),
                           table.column("compressed_logprobs").to_pylist()):  # fmt: skip
        for t, (ix, lp) in enumerate(zip(ixs, lps)):
            ids, vals = decode_position(ix, lp, rec)
            assert ids == s["topk_ids"][t].tolist()
            np.testing.assert_allclose(vals, s["topk_logprobs"][t], rtol=2**-8)  # bf16


def test_recommended_config_for_k128_matches_distillkit_readme():
    from logitcache.convert.distillkit_layout import recommended_config

    cfg = recommended_config(151936, 128).to_dict()
    assert cfg["exact_k"] == 16 and cfg["exact_dtype"] == "bfloat16"
    assert cfg["polynomial_terms"] == [0, 1, 2, 3, 4, "sqrt"] and cfg["delta_encoding"] is False
    # 16 bf16 + 6 fp32 terms = 56 B; 128 18-bit ids = 288 B
    assert recommended_config(151936, 128).logprob_bytes == 56
    assert recommended_config(151936, 128).index_bytes == 288


# -- bad input: a clear error naming the file and the fix, nothing written --------------
def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_missing_compression_config(tmp_path, tiny_llama_dir, capsys):
    src = tmp_path / "dk"
    write_fixture(src, config())
    (src / "compression_config.yaml").unlink()
    assert convert(src, tmp_path / "out", tiny_llama_dir) == 2
    err = capsys.readouterr().err
    assert "compression_config.yaml not found" in err and "--compression-config" in err
    assert _nothing_written(tmp_path / "out")


@pytest.mark.parametrize("field,value", [("d", 256), ("k", K + 4)])
def test_config_that_does_not_match_the_rows(tmp_path, tiny_llama_dir, capsys, field, value):
    src = tmp_path / "dk"
    write_fixture(src, config())
    (src / "compression_config.yaml").write_text(yaml.safe_dump(config(**{field: value})))
    assert convert(src, tmp_path / "out", tiny_llama_dir) == 2
    err = capsys.readouterr().err
    assert "data-00000.parquet" in err and "does not describe this data" in err
    assert _nothing_written(tmp_path / "out")


def test_tokenizer_smaller_than_d(tmp_path, tiny_llama_dir, capsys):
    src = tmp_path / "dk"
    write_fixture(src, config())
    (src / "compression_config.yaml").write_text(yaml.safe_dump(config(d=4096)))
    assert convert(src, tmp_path / "out", tiny_llama_dir) == 2
    err = capsys.readouterr().err
    assert "d=4096" in err and "compression_config.yaml" in err and "--teacher" in err
    assert _nothing_written(tmp_path / "out")


def test_a_row_whose_bytes_do_not_match_the_config(tmp_path, tiny_llama_dir, capsys):
    src = tmp_path / "dk"
    write_fixture(src, config())
    path = src / "data-00001.parquet"
    table = pq.read_table(path)
    rows = table.column("compressed_logprobs").to_pylist()
    rows[4][1] = rows[4][1][:-1]  # one position of row 4 (second row group) loses a byte
    table = table.set_column(1, "compressed_logprobs", pa.array(rows, table.schema.field(1).type))
    pq.write_table(table, path, row_group_size=3)
    assert convert(src, tmp_path / "out", tiny_llama_dir) == 2
    err = capsys.readouterr().err
    assert "data-00001.parquet: row 4" in err and "Re-export" in err
    assert _nothing_written(tmp_path / "out")


def test_converted_cache_trains_with_the_loader_and_distillation_trainer(tmp_path, tiny_llama_dir):
    from transformers import TrainingArguments

    from logitcache.data import CacheDataset, make_dataloader
    from logitcache.integrations.transformers import DistillationTrainer
    from logitcache.train.student import preset_student

    src = tmp_path / "dk"
    write_fixture(src, config(), labels=True)
    out = tmp_path / "cache"
    assert convert(src, out, tiny_llama_dir) == 0  # default codec (lc1)
    batches = list(make_dataloader(CacheDataset(str(out)), batch_size=4))
    assert sum(b["input_ids"].shape[0] for b in batches) == 10
    m = open_cache(str(out)).manifest
    args = TrainingArguments(str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)  # fmt: skip
    trainer = DistillationTrainer(model=preset_student("tiny", m), args=args, cache=str(out))
    trainer.train()
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
    assert json.loads(json.dumps(m.extra["provenance"]))["tail"].startswith("derived")
    # and our own trainer
    assert cli(["train", "--cache", str(out), "--student", "tiny", "--out", str(tmp_path / "lc"),
                "--steps", "2", "--batch-size", "4", "--device", "cpu", "--eval-every", "2",
                "--heldout-fraction", "0.3"]) == 0  # fmt: skip
    assert (tmp_path / "lc" / "student" / "config.json").exists()
