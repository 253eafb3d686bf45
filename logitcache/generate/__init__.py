"""Teacher-generated datasets: ``generate_dataset(GenerateConfig(...))`` and
``logitcache generate``.

prompts (:mod:`.prompts`) -> responses (:mod:`.hf`, :mod:`.vllm`) -> soft labels by a scoring
pass and capture's encode/commit stages (:mod:`.stages`) -> cache through capture's shared driver (:mod:`.dataset_job`) -> optional
JSONL text export (:mod:`.export`).
"""

from logitcache.generate.config import GenerateConfig, GenerationParams
from logitcache.generate.dataset_job import generate_dataset
from logitcache.generate.export import export_jsonl, iter_texts

__all__ = ["GenerateConfig", "GenerationParams", "export_jsonl", "generate_dataset", "iter_texts"]
