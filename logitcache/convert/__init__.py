"""Conversion between logitcache caches and other offline-distillation formats.

- ``distillkit``: DistillKit v1 Parquet (``compressed_logprobs``, ``bytepacked_indices``) and its
  ``compression_config.yaml`` (:mod:`.distillkit`, bit layout in :mod:`.distillkit_layout`).
- ``axolotl``: Axolotl KD rows (``target_token_ids``, ``target_logprobs``, ``target_mask``).

Both keep our alignment (row j is the distribution of token j+1). Neither format stores a tail,
so an imported cache's tail is derived from the top-k and the manifest records that and the
provenance (format, its config, sha256 of every source file). docs/integrations.md is the guide.
"""

from __future__ import annotations

import importlib
from typing import Any

from logitcache.errors import ConfigError

FORMATS: dict[str, str] = {
    "distillkit": "logitcache.convert.distillkit",
    "axolotl": "logitcache.convert.axolotl",
}


def _module(fmt: str):
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[fmt])


def convert_to_cache(
    src: str,
    fmt: str,
    out: str,
    *,
    teacher: str | None = None,
    tokenizer: str | None = None,
    codec: str | None = None,
    compression_config: str | None = None,
    storage_options: Any = None,
    source_storage_options: Any = None,
):
    """Convert the dataset at ``src`` (format ``fmt``) into a cache at ``out``; its manifest."""
    from logitcache.convert.common import resolve_tokenizer, write_cache

    module = _module(fmt)
    info = resolve_tokenizer(teacher, tokenizer)
    plan = module.plan_import(
        src,
        compression_config=compression_config,
        storage_options=source_storage_options,
        info=info,
    )
    return write_cache(plan, out, info, codec=codec, storage_options=storage_options)


def export_cache(
    cache: str,
    fmt: str,
    out: str,
    *,
    compression_config: str | None = None,
    storage_options: Any = None,
) -> dict[str, Any]:
    """Write the cache at ``cache`` as a ``fmt`` dataset in the new directory ``out``."""
    return _module(fmt).export(
        cache, out, compression_config=compression_config, storage_options=storage_options
    )


__all__ = ["FORMATS", "convert_to_cache", "export_cache"]
