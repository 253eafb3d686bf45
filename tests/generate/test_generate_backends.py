"""The vLLM request/response conversion on vLLM-shaped fixtures, the sampling rule, a Ray run
with one teacher actor, and the real SmolLM2 teacher on a handful of prompts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from config_sections import generate_config

from logitcache.errors import TeacherError
from logitcache.format import open_cache
from logitcache.format.verify import verify_cache
from logitcache.generate import GenerationParams, export_jsonl, generate_dataset
from logitcache.generate.hf import sample_next
from logitcache.generate.vllm_convert import outputs_to_responses, requests, sampling_kwargs


def _request_output(token_ids, finish_reason="stop"):
    """Shaped like vllm.RequestOutput: .prompt_token_ids and .outputs[i].token_ids."""
    completion = SimpleNamespace(
        index=0, token_ids=list(token_ids), finish_reason=finish_reason, logprobs=None
    )
    return SimpleNamespace(prompt_token_ids=[1, 2], outputs=[completion])


def test_vllm_requests_and_outputs_convert():
    params = GenerationParams(max_new_tokens=5, temperature=0.7, top_p=0.9, n=3, seed=1)
    kw = sampling_kwargs(params, seed=42)
    # one request per (prompt, index): n=1 and the sample's own seed, never the batch's
    assert kw == {
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 42,
        "max_tokens": 5,
        "detokenize": False,
    }
    assert requests([np.array([3, 4], np.int32)]) == [{"prompt_token_ids": [3, 4]}]
    outs = outputs_to_responses([_request_output([7, 8, 2]), _request_output([9], "length")], 2)
    assert [o.tolist() for o in outs] == [[7, 8, 2], [9]]
    assert all(o.dtype == np.int32 for o in outs)
    with pytest.raises(TeacherError, match="1 results for 2 requests"):
        outputs_to_responses([_request_output([1])], 2)
    with pytest.raises(TeacherError, match="no completion"):
        outputs_to_responses([SimpleNamespace(outputs=[])], 1)


def test_sampling_is_per_row_seeded_and_respects_top_p():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    params = GenerationParams(temperature=1.0, top_p=0.3)
    draws = [
        sample_next(logits, params, [torch.Generator().manual_seed(s) for s in (1, 2, 3)])
        for _ in range(2)
    ]
    assert draws[0].tolist() == draws[1].tolist()
    # a row's draw does not depend on the other rows of the batch
    alone = sample_next(logits[1:2], params, [torch.Generator().manual_seed(2)])
    assert alone.item() == draws[0][1].item()
    # every draw lies in that row's top-p nucleus
    probs = torch.softmax(logits, -1)
    for _ in range(20):
        gens = [torch.Generator().manual_seed(int(s)) for s in torch.randint(0, 10**6, (3,))]
        tok = sample_next(logits, params, gens)
        for row in range(3):
            p, order = probs[row].sort(descending=True)
            nucleus = order[: int(((p.cumsum(0) - p) < 0.3).sum())]
            assert tok[row].item() in nucleus.tolist()
    greedy = sample_next(logits, GenerationParams(temperature=0.0), [None] * 3)
    assert greedy.tolist() == logits.argmax(-1).tolist()


def _prompts(tmp_path, records):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.mark.slow
def test_ray_run_equals_local_run(tiny_llama_dir, tmp_path):
    prompts = _prompts(tmp_path, [{"prompt": f"Question {i}?"} for i in range(4)])
    common = dict(
        teacher=str(tiny_llama_dir),
        prompts=[prompts],
        generation=GenerationParams(max_new_tokens=4, n=2, seed=5),
        top_k=4,
        prompts_per_unit=2,
        progress="off",
        codec="lc1",  # its table fitted on the first unit's generated rows, in each executor
        dtype="float32",
        device="cpu",
    )
    generate_dataset(generate_config(out=str(tmp_path / "local"), use_ray=False, **common))
    m = generate_dataset(generate_config(out=str(tmp_path / "ray"), workers=1, **common))
    assert m.stats["run"]["ray"] and len(m.shards) == 2
    assert verify_cache(open_cache(str(tmp_path / "ray"))).ok
    local_codec = open_cache(str(tmp_path / "local")).manifest.codec
    assert m.codec["spec"] == local_codec["spec"] and m.codec["ranks_listed"] > 0
    local = {s["sample_id"]: s for s in open_cache(str(tmp_path / "local")).iter_samples()}
    ray_ = {s["sample_id"]: s for s in open_cache(str(tmp_path / "ray")).iter_samples()}
    assert local.keys() == ray_.keys() and len(local) == 8
    for sid in local:
        np.testing.assert_array_equal(local[sid]["input_ids"], ray_[sid]["input_ids"])
        np.testing.assert_array_equal(local[sid]["topk_ids"], ray_[sid]["topk_ids"])


@pytest.mark.slow
def test_smollm2_answers_a_few_prompts(smollm2_gguf, tmp_path):
    prompts = _prompts(
        tmp_path,
        [
            {"prompt": "What is the capital of France?"},
            {"messages": [{"role": "user", "content": "Say hello in one word."}]},
        ],
    )
    out = tmp_path / "smol"
    generate_dataset(
        generate_config(
            teacher="smollm2-135m",
            prompts=[prompts],
            out=str(out),
            generation=GenerationParams(max_new_tokens=8, temperature=0.0),
            top_k=16,
            use_ray=False,
            progress="off",
            device="cpu",
        )
    )
    cache = open_cache(str(out))
    assert verify_cache(cache).ok
    n = export_jsonl(str(out), str(tmp_path / "smol.jsonl"))
    records = [json.loads(x) for x in (tmp_path / "smol.jsonl").read_text().splitlines()]
    assert n == len(records) == 2
    assert all(r["response"].strip() and r["prompt"].startswith("<|im_start|>") for r in records)
    for s in cache.iter_samples():
        pos = np.flatnonzero(s["loss_mask"])
        assert 1 <= len(pos) <= 8
        # greedy: each response token is the teacher's top-1 at the position before it
        np.testing.assert_array_equal(s["topk_ids"][pos, 0], s["input_ids"][pos + 1])
