"""Response generation with the vLLM teacher (GPU serving engine); not run by CI.

It reuses the engine of :class:`~logitcache.teachers.vllm.VLLMTeacher` (one engine per
worker, started with ``logprobs_mode="raw_logprobs"``), so the scoring pass that follows runs
on the same weights. Requests and output conversion: :mod:`logitcache.generate.vllm_convert`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from logitcache.generate.vllm_convert import outputs_to_responses, requests, sampling_kwargs


class VLLMGenerator:
    def __init__(self, teacher, params, *, top_k: int):
        import vllm  # the teacher import already failed with the install hint if it is missing

        self._vllm = vllm
        self.teacher = teacher
        self.params = params
        self.top_k = max(top_k, 1)

    def generate(self, prompts: Sequence[np.ndarray], seeds: Sequence[int]) -> list[np.ndarray]:
        llm = self.teacher._engine(self.top_k)
        sampling = [self._vllm.SamplingParams(**sampling_kwargs(self.params, s)) for s in seeds]
        outputs = llm.generate(requests(prompts), sampling, use_tqdm=False)
        return outputs_to_responses(outputs, len(prompts))
