"""`logitcache build --backend vllm` on the real SmolLM2 teacher equals the transformers
backend's cache of the same corpus (within ties and the codec step)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm", reason="the vLLM tests run in .venv-vllm: `make test-vllm`")

from vllm_helpers import compare_soft_labels, run_cli  # noqa: E402

from logitcache.format import open_cache  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
COMMON = ["--seq-len", "256", "--max-tokens", "1536", "--top-k", "64", "--no-ray"]
COMMON += ["--progress", "off", "--dtype", "float32", "--device", "cpu"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory, pydoc_jsonl):
    root = tmp_path_factory.mktemp("vllm-build")
    out = {}
    for backend in ("transformers", "vllm"):
        uri = str(root / backend)
        args = ["build", "--teacher", "smollm2-135m", "--corpus", pydoc_jsonl, "--out", uri]
        run_cli(*args, *COMMON, "--backend", backend)
        out[backend] = uri
    return out


def test_vllm_cache_equals_transformers_cache(caches):
    stats = compare_soft_labels(caches["transformers"], caches["vllm"])
    print(json.dumps(stats))
    assert stats["positions"] >= 1500


def test_vllm_cache_records_its_engine_and_verifies(caches):
    manifest = open_cache(caches["vllm"]).manifest
    assert manifest.teacher["backend"] == "vllm"
    assert manifest.capture["top_k"] == 64
    run_cli("verify", caches["vllm"])


def test_sampled_draws_are_refused_with_the_way_out(tmp_path, pydoc_jsonl):
    with pytest.raises(AssertionError, match="backend='transformers'"):
        run_cli(
            "build", "--teacher", "smollm2-135m", "--corpus", pydoc_jsonl,
            "--out", str(tmp_path / "rs"), "--backend", "vllm", "--rs-samples", "4",
            *COMMON,
        )  # fmt: skip
