"""The real teacher: a small SmolLM2-135M build equals a direct transformers forward."""

from __future__ import annotations

import numpy as np
import pytest
from config_sections import capture_config

from logitcache.capture import build_cache
from logitcache.format import open_cache

K = 16


@pytest.mark.slow
def test_smollm2_cache_matches_direct_forward(smollm2_gguf, pydoc_jsonl, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = str(tmp_path / "smol")
    m = build_cache(
        capture_config(
            teacher="smollm2-135m",
            corpus=[pydoc_jsonl],
            out=out,
            top_k=K,
            seq_len=128,
            max_tokens=300,
            use_ray=False,
            progress="off",
            device="cpu",
        )
    )
    assert m.num_tokens == 300 and m.teacher["gguf_file"] == smollm2_gguf.filename
    assert m.tokenizer["vocab_size"] >= m.tokenizer["tokenizer_size"]
    model = AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.dir), gguf_file=smollm2_gguf.filename, dtype=torch.float32
    ).eval()
    lossless = bool(m.codec.get("lossless"))
    # Highest log-probs use the codec's finest step; the lossless codecs store floats exactly.
    tol = 2e-3 if lossless else float(m.codec.get("step", 0.125)) / 2 + 2e-3
    checked = 0
    for s in open_cache(out).iter_samples():
        with torch.no_grad():
            ids = torch.as_tensor(s["input_ids"][None].astype(np.int64))
            ref = torch.log_softmax(model(ids).logits[0].float(), -1).numpy()
        order = np.argsort(-ref, axis=1, kind="stable")
        top = np.take_along_axis(ref, order[:, : K + 1], 1)
        # Ids must agree wherever the teacher's ranking is not a near-tie.
        clear = np.abs(np.diff(top, axis=1)).min(axis=1) > 1e-3
        # (as sets: a codec may store a position's entries in its own order)
        got = np.sort(s["topk_ids"][clear], axis=1)
        assert np.array_equal(got, np.sort(order[clear, :K], axis=1))
        assert clear.mean() > 0.8
        stored = np.take_along_axis(ref, s["topk_ids"].astype(np.int64), 1)
        near = stored > -2.0
        np.testing.assert_allclose(s["topk_logprobs"][near], stored[near], atol=tol)
        # Tail mass: the same probability outside the top-k (compared as mass, since its log
        # is ill-conditioned when the tail is tiny).
        tail = 1.0 - np.exp(top[:, :K].astype(np.float64)).sum(1)
        np.testing.assert_allclose(np.exp(s["tail_logmass"].astype(np.float64)), tail, atol=5e-4)
        checked += len(s["input_ids"])
    assert checked == 300
