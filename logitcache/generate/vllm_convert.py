"""vLLM generation requests and output -> response token ids (pure Python; vLLM not needed).

One request per (prompt, sample index), ``n=1`` with that sample's own ``seed``: vLLM seeds a
request's sampler from ``SamplingParams.seed``, so a sample's response does not depend on the
other requests in the batch, exactly as with the transformers loop. A request is
``{"prompt_token_ids": [...]}`` (the prompt as rendered and tokenised by us, so both backends
see identical prompts); its output is ``RequestOutput.outputs[0].token_ids``, which ends with
the stop token when generation stopped on one (vLLM keeps the EOS token in ``token_ids``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from logitcache.errors import TeacherError


def sampling_kwargs(params, seed: int) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one sample."""
    return {
        "n": 1,
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "seed": int(seed),
        "max_tokens": int(params.max_new_tokens),
        "detokenize": False,
    }


def requests(prompts: Sequence[np.ndarray]) -> list[dict[str, list[int]]]:
    return [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]


def outputs_to_responses(outputs: Sequence[Any], expected: int) -> list[np.ndarray]:
    """``LLM.generate`` results (in request order) -> one int32 response per request."""
    if len(outputs) != expected:
        raise TeacherError(f"vLLM returned {len(outputs)} results for {expected} requests")
    out = []
    for i, req in enumerate(outputs):
        completions = getattr(req, "outputs", None)
        if not completions:
            raise TeacherError(f"vLLM returned no completion for request {i}")
        out.append(np.asarray(list(completions[0].token_ids), dtype=np.int32))
    return out
