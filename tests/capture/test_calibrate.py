"""The codec's table is fitted on the first unit's labels as they are scored (no extra teacher
pass), the same table in-process and on Ray, and fitted afresh after a run that stopped before
its first commit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from config_sections import capture_config

from logitcache.capture import build_cache
from logitcache.capture.calibrate import calibration_budget
from logitcache.capture.stages import Scorer
from logitcache.codecs import CodecContext, get_codec
from logitcache.format import open_cache, read_manifest
from logitcache.storage import Store

K = 8
KW = {"max_tokens": 2400, "unit_tokens": 300, "seq_len": 64, "top_k": K, "rs_samples": 2}


def _build(teacher_dir, corpus, out, **kw):
    cfg = {"teacher": teacher_dir, "corpus": [corpus], "out": out, "use_ray": False}
    cfg |= {"progress": "off", "codec": "lc1", "dtype": "float32", "device": "cpu"}
    return build_cache(capture_config(**{**cfg, **KW, **kw}))


def _fit_on_first_unit(uri: str) -> str:
    """The spec lc1 fits on the first committed unit's decoded ids, as the build should."""
    cache = open_cache(uri)
    first = list(cache.iter_samples(cache.shards[:1]))
    ctx = CodecContext(vocab_size=cache.manifest.tokenizer["vocab_size"], top_k=K, rs_samples=2)
    budget = calibration_budget([SimpleNamespace(tokens=cache.manifest.num_tokens)])
    rows, total = [], 0
    for s in first:
        rows.append(s)
        total += len(s["input_ids"])
        if total >= budget:
            break
    return get_codec("lc1").calibrate(rows, ctx).spec


@pytest.fixture(scope="module")
def local_cache(teacher_dir, paragraphs_jsonl, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("calib") / "local")
    return out, _build(teacher_dir, paragraphs_jsonl, out)


def test_table_is_fitted_on_the_first_units_labels(local_cache):
    uri, m = local_cache
    assert len(m.shards) >= 4
    assert m.codec["ranks_listed"] > 0, m.codec
    assert m.codec["spec"] == _fit_on_first_unit(uri)
    assert get_codec(m.codec["spec"]).fitted and not get_codec("lc1").fitted


@pytest.mark.slow
def test_ray_actor_fits_the_same_table_on_the_first_unit(
    teacher_dir, paragraphs_jsonl, tmp_path, local_cache, ray_local
):
    _, local = local_cache
    m = _build(teacher_dir, paragraphs_jsonl, str(tmp_path / "ray"), use_ray=True, workers=2)
    assert m.codec["spec"] == local.codec["spec"]
    assert len(m.stats["workers"]) == 2
    a = {s["sample_id"]: s for s in open_cache(str(tmp_path / "ray")).iter_samples()}
    b = {s["sample_id"]: s for s in open_cache(local_cache[0]).iter_samples()}
    assert set(a) == set(b)


def test_run_stopped_before_its_first_commit_fits_afresh(
    teacher_dir, paragraphs_jsonl, tmp_path, local_cache, monkeypatch
):
    out = str(tmp_path / "stopped")
    original = Scorer.score_rows

    def fail(self, rows):
        raise RuntimeError("teacher lost before the first unit finished")

    monkeypatch.setattr(Scorer, "score_rows", fail)
    with pytest.raises(RuntimeError, match="teacher lost"):
        _build(teacher_dir, paragraphs_jsonl, out)
    stopped = read_manifest(Store.open(out))
    assert stopped.status == "building" and not stopped.shards
    assert not get_codec(stopped.codec["spec"]).fitted
    monkeypatch.setattr(Scorer, "score_rows", original)
    m = _build(teacher_dir, paragraphs_jsonl, out)
    assert m.status == "complete" and m.codec["spec"] == local_cache[1].codec["spec"]
