"""`logitcache generate --backend vllm` (greedy) writes the same rows and soft labels as the
transformers backend on the real SmolLM2 teacher."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm", reason="the vLLM tests run in .venv-vllm: `make test-vllm`")

from vllm_helpers import compare_soft_labels, run_cli, samples  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
PROMPTS = [
    {"prompt": "What is a Python list?"},
    {"prompt": "Name three colours."},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-generate")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = {}
    for backend in ("transformers", "vllm"):
        uri = str(root / backend)
        run_cli(
            "generate", "--teacher", "smollm2-135m", "--prompts", str(prompts), "--out", uri,
            "--max-new-tokens", "16", "--temperature", "0", "--top-k", "32", "--no-ray",
            "--progress", "off", "--dtype", "float32", "--device", "cpu", "--backend", backend,
        )  # fmt: skip
        out[backend] = uri
    return out


def test_greedy_responses_and_soft_labels_match(generated):
    ref, got = samples(generated["transformers"]), samples(generated["vllm"])
    assert len(ref) == len(PROMPTS)
    # Greedy decoding on the same fp32 weights: the same responses token for token.
    for sid in ref:
        assert ref[sid]["input_ids"].tolist() == got[sid]["input_ids"].tolist(), sid
    stats = compare_soft_labels(generated["transformers"], generated["vllm"])
    print(json.dumps(stats))
