"""logitcache: compute an LLM teacher's soft labels once, reuse them for every student.

cache = logitcache.open_cache("s3://bucket/caches/smollm2-pydoc")
for sample in cache.iter_samples():
    sample["topk_ids"], sample["topk_logprobs"], sample["tail_logmass"]
"""

__version__ = "0.1.0"

from logitcache.format import Cache, Manifest, open_cache  # noqa: E402

__all__ = ["Cache", "Manifest", "open_cache", "__version__"]
