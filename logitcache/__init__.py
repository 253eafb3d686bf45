"""logitcache: compute an LLM teacher's soft labels once, reuse them for every student.

cache = logitcache.open_cache("s3://bucket/caches/smollm2-pydoc")
for sample in cache.iter_samples():
    sample["topk_ids"], sample["topk_logprobs"], sample["tail_logmass"]
"""

__version__ = "0.1.0"

from logitcache.format import Cache, Manifest, open_cache  # noqa: E402


def to_hf_dataset(cache_or_uri, split=None, **kwargs):
    """The cache's decoded rows as a ``datasets.IterableDataset``; see
    :func:`logitcache.data.hf_dataset.to_hf_dataset`."""
    from logitcache.data.hf_dataset import to_hf_dataset as _to_hf_dataset

    return _to_hf_dataset(cache_or_uri, split, **kwargs)


__all__ = ["Cache", "Manifest", "open_cache", "to_hf_dataset", "__version__"]
