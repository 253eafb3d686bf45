"""The real SmolLM2-135M teacher (GGUF), scored through logitcache vs a direct transformers
forward on the GGUF file (which also checks the one-time GGUF conversion cache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitcache.teachers import TeacherConfig, load_teacher


@pytest.mark.slow
def test_smollm2_matches_direct_gguf_forward(smollm2_gguf):
    from pydoc_data.topics import topics

    from transformers import AutoModelForCausalLM

    teacher = load_teacher(TeacherConfig(teacher="smollm2-135m", device="cpu"))
    assert teacher.vocab_size == 49152 and teacher.identity["gguf_file"] == smollm2_gguf.filename
    ids = np.asarray(teacher.tokenizer(topics["for"])["input_ids"][:64], np.int32)
    got = teacher.score([ids], top_k=16, rs_samples=8, seeds=[1])[0]

    model = AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.dir, gguf_file=smollm2_gguf.filename, dtype=torch.float32
    ).eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(ids[None].astype(np.int64))).logits[0]
    ref = torch.log_softmax(logits.double(), -1).numpy()
    ref_ids = np.argsort(-ref, axis=1, kind="stable")[:, :16]
    assert (got["topk_ids"] == ref_ids).mean() > 0.99  # near-ties may swap
    np.testing.assert_allclose(got["topk_logprobs"], np.take_along_axis(ref, ref_ids, 1), atol=1e-3)
    ref_tail = np.log1p(-np.exp(np.take_along_axis(ref, ref_ids, 1)).sum(1))
    np.testing.assert_allclose(got["tail_logmass"], ref_tail, atol=1e-3)
    # a pretrained model is confident on real text: the top-1 is usually the next token
    assert (got["topk_ids"][:-1, 0] == ids[1:]).mean() > 0.3
    assert np.all(got["rs_counts"].sum(1) == 8)
