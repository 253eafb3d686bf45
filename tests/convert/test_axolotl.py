"""Axolotl KD rows (its kd.chat_template output: one target row per input token, row j the
distribution of input_ids[j+1], last row padding) into a cache and back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from logitcache.cli import main as cli
from logitcache.format import open_cache

V, K = 512, 6
PAD = -1e9


def write_axolotl(path, rows=7, seed=0):
    """Rows as Axolotl's preprocessing leaves them: top-k renormalised (log_softmax over the
    k), masked prompt targets, a padded last row."""
    rng = np.random.default_rng(seed)
    recs = {k: [] for k in ("input_ids", "labels", "attention_mask", "target_token_ids",
                             "target_logprobs", "target_mask")}  # fmt: skip
    for _ in range(rows):
        t = int(rng.integers(4, 12))
        ids = rng.integers(0, V, t)
        prompt = int(rng.integers(1, t - 1))
        labels = np.where(np.arange(t) > prompt, ids, -100)
        tids, tlp, tmask = [], [], []
        for j in range(t):
            if j == t - 1:
                tids.append([0] * K), tlp.append([PAD] * K), tmask.append([0] * K)
                continue
            z = rng.standard_normal(K) * 2
            lp = np.sort(z - np.log(np.exp(z).sum()))[::-1].astype(np.float32)
            tids.append(rng.choice(V, K, replace=False).tolist())
            tlp.append(lp.tolist())
            tmask.append([int(labels[j + 1] != -100)] * K)
        recs["input_ids"].append(ids.tolist())
        recs["labels"].append(labels.tolist())
        recs["attention_mask"].append([1] * t)
        recs["target_token_ids"].append(tids)
        recs["target_logprobs"].append(tlp)
        recs["target_mask"].append(tmask)
    i64 = pa.list_(pa.int64())
    schema = pa.schema([("input_ids", i64), ("labels", i64), ("attention_mask", i64),
                        ("target_token_ids", pa.list_(i64)),
                        ("target_logprobs", pa.list_(pa.list_(pa.float32()))),
                        ("target_mask", pa.list_(i64))])  # fmt: skip
    pq.write_table(pa.Table.from_pydict(recs, schema=schema), path)
    return recs


def test_axolotl_round_trip_is_exact_with_the_raw_codec(tmp_path, tiny_llama_dir):
    src = tmp_path / "ax"
    src.mkdir()
    recs = write_axolotl(src / "train.parquet")
    out = tmp_path / "cache"
    assert cli(["convert", str(src), "--from", "axolotl", "--out", str(out), "--tokenizer",
                str(tiny_llama_dir), "--codec", "raw"]) == 0  # fmt: skip
    cache = open_cache(str(out))
    assert cache.manifest.top_k == K and cache.manifest.capture["tail"] == "derived"
    assert cache.manifest.extra["provenance"]["format"] == "axolotl"
    samples = list(cache.iter_samples())
    for s, ids, tids, tlp, labels in zip(samples, recs["input_ids"], recs["target_token_ids"],
                                         recs["target_logprobs"], recs["labels"]):  # fmt: skip
        assert s["input_ids"].tolist() == ids
        assert s["topk_ids"].tolist() == tids
        np.testing.assert_array_equal(s["topk_logprobs"], np.array(tlp, np.float32))
        # row j predicts input_ids[j+1]: its mask is labels[j+1] != -100, last row never
        assert s["loss_mask"].tolist() == [lab != -100 for lab in labels[1:]] + [False]
    assert cli(["export", str(out), "--to", "axolotl", "--out", str(tmp_path / "back")]) == 0
    back = pq.read_table(sorted((tmp_path / "back").glob("*.parquet"))[0])
    for name, values in recs.items():
        assert back.column(name).to_pylist() == values, name


def test_axolotl_rows_must_have_one_target_row_per_token(tmp_path, tiny_llama_dir, capsys):
    src = tmp_path / "ax"
    src.mkdir()
    write_axolotl(src / "train.parquet")
    table = pq.read_table(src / "train.parquet")
    rows = table.column("target_logprobs").to_pylist()
    rows[3] = rows[3][:-1]
    table = table.set_column(4, "target_logprobs", pa.array(rows, table.schema.field(4).type))
    pq.write_table(table, src / "train.parquet")
    out = tmp_path / "cache"
    assert cli(["convert", str(src), "--from", "axolotl", "--out", str(out), "--tokenizer",
                str(tiny_llama_dir)]) == 2  # fmt: skip
    assert "train.parquet: row 3" in capsys.readouterr().err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
