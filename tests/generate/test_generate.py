"""Teacher-generated datasets with the tiny random Llama: alignment, soft labels, seeds,
resume, export, the CLI, and training from the result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from config_sections import generate_config

from logitcache.errors import ConfigError, IncompatibleCacheError, TeacherError
from logitcache.format import open_cache
from logitcache.format.verify import verify_cache
from logitcache.generate import GenerateConfig, GenerationParams, export_jsonl, generate_dataset

K = 8
RS = 4
PROMPTS = [
    {"prompt": "What is a list?"},
    {"prompt": "Explain how tuples differ from lists in a few words."},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return str(path)


def _config(teacher, prompts, out, **kw) -> GenerateConfig:
    gen = {"max_new_tokens": 6, "temperature": 1.0, "top_p": 0.9, "n": 2, "seed": 0}
    gen.update(kw.pop("generation", {}))
    base = dict(
        teacher=teacher,
        prompts=[prompts],
        out=str(out),
        generation=GenerationParams(**gen),
        top_k=K,
        rs_samples=RS,
        use_ray=False,
        progress="off",
        codec="raw",
        dtype="float32",
        device="cpu",
    )
    base.update(kw)
    return generate_config(**base)


def _samples(uri) -> dict[str, dict]:
    return {s["sample_id"]: s for s in open_cache(uri).iter_samples()}


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def generated(tiny_llama_dir, prompts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "cache"
    generate_dataset(_config(tiny_llama_dir, prompts_file, out))
    return str(out)


def _rendered_prompt_ids(tokenizer, record) -> list[int]:
    messages = record.get("messages") or [{"role": "user", "content": record["prompt"]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_cache_verifies_with_loss_on_response_tokens_only(generated, tokenizer):
    cache = open_cache(generated)
    assert verify_cache(cache).ok
    m = cache.manifest
    assert m.capture["generation"]["seed"] == 0 and m.capture["generation"]["n"] == 2
    assert m.extra["generation"] == m.capture["generation"]
    samples = _samples(generated)
    assert len(samples) == len(PROMPTS) * 2
    by_prompt: dict[str, list[int]] = {}
    for sid in samples:
        key, _, index = sid.rpartition("-")
        by_prompt.setdefault(key, []).append(int(index))
    assert sorted(sorted(v) for v in by_prompt.values()) == [[0, 1]] * len(PROMPTS)
    prompt_ids = [_rendered_prompt_ids(tokenizer, r) for r in PROMPTS]
    for s in samples.values():
        ids, mask = s["input_ids"], s["loss_mask"]
        p = next(p for p in prompt_ids if ids[: len(p)].tolist() == p)
        n_resp = len(ids) - len(p)
        assert 1 <= n_resp <= 6
        # ALIGNMENT: loss_mask[t] iff token t+1 is a response token
        expected = np.zeros(len(ids), bool)
        expected[len(p) - 1 : len(ids) - 1] = True
        np.testing.assert_array_equal(mask, expected)
        assert s["topk_ids"].shape == (len(ids), K)
        assert s["rs_counts"].sum(axis=1).tolist() == [RS] * len(ids)


def test_topk_equals_a_direct_forward_of_the_sequence(generated, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    for s in _samples(generated).values():
        with torch.no_grad():
            logits = model(torch.as_tensor(s["input_ids"][None].astype(np.int64))).logits[0]
        ref = torch.log_softmax(logits.float(), -1).numpy()
        pos = np.flatnonzero(s["loss_mask"])
        ref_lp, ref_ids = torch.from_numpy(ref[pos]).topk(K, dim=-1)
        np.testing.assert_array_equal(s["topk_ids"][pos], ref_ids.numpy())
        np.testing.assert_allclose(s["topk_logprobs"][pos], ref_lp.numpy(), atol=2e-3)
        tail = np.log1p(-np.exp(ref_lp.double().numpy()).sum(-1))
        np.testing.assert_allclose(s["tail_logmass"][pos], tail, atol=2e-3)


def test_same_seed_reproduces_and_other_seed_differs(
    generated, tiny_llama_dir, prompts_file, tmp_path
):
    generate_dataset(_config(tiny_llama_dir, prompts_file, tmp_path / "again"))
    a, b = _samples(generated), _samples(str(tmp_path / "again"))
    assert a.keys() == b.keys()
    for sid in a:
        for key in ("input_ids", "loss_mask", "topk_ids", "topk_logprobs", "rs_ids", "rs_counts"):
            np.testing.assert_array_equal(a[sid][key], b[sid][key], err_msg=f"{sid} {key}")
    # Other batching (a tiny token budget: one row per batch): same tokens; soft labels equal
    # up to fp rounding of the padded batch matmuls.
    generate_dataset(_config(tiny_llama_dir, prompts_file, tmp_path / "rebatched", batch_tokens=8))
    r = _samples(str(tmp_path / "rebatched"))
    for sid in a:
        np.testing.assert_array_equal(a[sid]["input_ids"], r[sid]["input_ids"])
        np.testing.assert_allclose(a[sid]["topk_logprobs"], r[sid]["topk_logprobs"], atol=1e-4)
    generate_dataset(
        _config(tiny_llama_dir, prompts_file, tmp_path / "seed1", generation={"seed": 1})
    )
    c = _samples(str(tmp_path / "seed1"))
    assert c.keys() == a.keys()
    assert any(not np.array_equal(a[s]["input_ids"], c[s]["input_ids"]) for s in a)


def test_changed_generation_parameters_are_refused(generated, tiny_llama_dir, prompts_file):
    before = open_cache(generated).manifest.to_json()
    with pytest.raises(IncompatibleCacheError, match="temperature"):
        generate_dataset(
            _config(tiny_llama_dir, prompts_file, generated, generation={"temperature": 0.7})
        )
    assert open_cache(generated).manifest.to_json() == before


def test_interrupted_run_resumes_each_sample_exactly_once(
    generated, tiny_llama_dir, prompts_file, tmp_path, monkeypatch
):
    from logitcache.format import writer as writer_mod

    out = tmp_path / "resume"
    real_commit = writer_mod.CacheWriter.commit
    calls = {"n": 0}

    def crash_on_second(self, infos):
        calls["n"] += 1
        if calls["n"] == 2:  # second shard written but never committed: an orphan
            raise KeyboardInterrupt
        real_commit(self, infos)

    monkeypatch.setattr(writer_mod.CacheWriter, "commit", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(_config(tiny_llama_dir, prompts_file, out, prompts_per_unit=1))
    monkeypatch.setattr(writer_mod.CacheWriter, "commit", real_commit)
    partial = open_cache(str(out))
    assert partial.manifest.status == "building" and len(partial.shards) == 1
    first = {s["sample_id"] for s in partial.iter_samples()}

    m = generate_dataset(_config(tiny_llama_dir, prompts_file, out, prompts_per_unit=1))
    assert m.status == "complete" and len(m.shards) == len(PROMPTS)
    assert m.stats["run"]["units_skipped"] == 1
    cache = open_cache(str(out))
    assert verify_cache(cache).ok
    ids = [s["sample_id"] for s in cache.iter_samples()]
    assert len(ids) == len(set(ids)) == len(PROMPTS) * 2 and first <= set(ids)
    # unit size does not enter the samples: the resumed cache equals the reference one
    ref = _samples(generated)
    for s in cache.iter_samples():
        np.testing.assert_array_equal(s["input_ids"], ref[s["sample_id"]]["input_ids"])
        np.testing.assert_array_equal(s["topk_ids"], ref[s["sample_id"]]["topk_ids"])


def test_export_jsonl_round_trips_the_text(generated, tokenizer, tmp_path):
    out = tmp_path / "sft.jsonl"
    n = export_jsonl(generated, str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    samples = _samples(generated)
    assert n == len(records) == len(samples)
    rendered = {
        tokenizer.apply_chat_template(
            r.get("messages") or [{"role": "user", "content": r["prompt"]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for r in PROMPTS
    }
    for rec in records:
        s = samples[rec["sample_id"]]
        assert rec["sample_id"] == f"{rec['prompt_id']}-{rec['index']:04d}"
        assert rec["prompt"] in rendered
        p = rec["prompt_tokens"]
        assert (
            tokenizer(rec["prompt"], add_special_tokens=False)["input_ids"]
            == s["input_ids"][:p].tolist()
        )
        resp = s["input_ids"][p:].tolist()
        assert rec["response_tokens"] == len(resp)
        assert rec["response"] == tokenizer.decode(resp, skip_special_tokens=True)


def test_greedy_responses_match_transformers_generate(
    tiny_llama_dir, prompts_file, tmp_path, tokenizer
):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "greedy"
    generate_dataset(
        _config(tiny_llama_dir, prompts_file, out, generation={"temperature": 0.0, "n": 1})
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    samples = list(open_cache(str(out)).iter_samples())
    assert len(samples) == len(PROMPTS)
    for s in samples:
        p = int(np.argmax(s["loss_mask"])) + 1
        prompt = torch.as_tensor(s["input_ids"][None, :p].astype(np.int64))
        ref = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=6,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )[0, p:]
        assert s["input_ids"][p:].tolist() == ref.tolist()[: len(s["input_ids"]) - p]


def test_cli_generates_and_exports(tiny_llama_dir, prompts_file, tmp_path, capsys):
    from logitcache.cli import main

    out, jsonl = tmp_path / "cli", tmp_path / "cli.jsonl"
    argv = ["generate", "--teacher", str(tiny_llama_dir), "--prompts", prompts_file]
    argv += ["--out", str(out), "--max-new-tokens", "4", "--n", "1", "--top-k", "0"]
    argv += ["--rs-samples", "8", "--seed", "3", "--no-ray", "--device", "cpu"]
    argv += ["--dtype", "float32", "--progress", "off", "--export-jsonl", str(jsonl)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["samples"] == len(PROMPTS)
    assert len(jsonl.read_text().splitlines()) == len(PROMPTS)
    s = next(iter(open_cache(str(out)).iter_samples()))
    assert s["topk_ids"].shape[1] == 0 and s["rs_counts"].sum(axis=1).tolist() == [8] * len(
        s["input_ids"]
    )
    assert main(argv[:-2] + ["--top-k", "0", "--rs-samples", "0"]) == 2  # nothing to store


def test_training_from_a_generated_cache(generated, tmp_path):
    from logitcache.train import TrainConfig, train

    result = train(
        TrainConfig(
            cache=generated,
            out=str(tmp_path / "run"),
            student="tiny",
            steps=3,
            batch_size=2,
            warmup=1,
            heldout_fraction=0.2,
            num_workers=0,
            eval_every=3,
            eval_batches=2,
            log_every=1,
            device="cpu",
        )
    )
    assert result["step"] == 3 and result["finished"]
    assert result["tokens_seen"] > 0
    assert np.isfinite(result.get("eval_kl", 0.0))


def test_config_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="--rs-samples"):
        generate_config(teacher="t", prompts=["p"], out="o", top_k=0)
    with pytest.raises(ConfigError, match="--top-p"):
        GenerationParams(top_p=0.0)
    with pytest.raises(ConfigError, match="greedy"):
        GenerationParams(temperature=-1.0)
    with pytest.raises(ConfigError, match="--n"):
        GenerationParams(n=0)


def test_vllm_backend_without_vllm_gives_install_hint(tiny_llama_dir, prompts_file, tmp_path):
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(TeacherError, match=r"logitcache\[vllm\]"):
        generate_dataset(
            _config(tiny_llama_dir, prompts_file, tmp_path / "v", backend="vllm", rs_samples=0)
        )


def test_k_above_the_vocabulary_fails_before_anything_is_written(
    tiny_llama_dir, prompts_file, tmp_path
):
    """generate shares build's driver: k is checked against the teacher's logits width before
    the writer exists, so no `building` manifest (and no lease) is left behind."""
    out = tmp_path / "too-big-k"
    with pytest.raises(ConfigError, match="exceeds the teacher's vocabulary"):
        generate_dataset(_config(tiny_llama_dir, prompts_file, str(out), top_k=10**6))
    assert not out.exists() or not any(out.iterdir())
