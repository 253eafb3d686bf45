"""``SFTDistillationTrainer``: TRL's ``SFTTrainer`` distilling from a cache.

An SFT script switches by changing the class and passing ``cache=`` instead of a dataset::

    trainer = SFTDistillationTrainer(
        model=student, args=SFTConfig("runs/sft", max_steps=500), cache=uri,
        processing_class=tokenizer, loss=LossConfig(kind="kl_tail", alpha=0.1),
    )

The cache is already tokenised, packed and masked, so TRL's dataset preparation is skipped
(``dataset_kwargs={"skip_prepare_dataset": True}``); TRL still receives a ``datasets`` view of
the cache (:func:`logitcache.to_hf_dataset`) because its constructor inspects one sample. Data
loading, loss, logging, evaluation and resume are those of
:class:`~logitcache.integrations.transformers.DistillationMixin`.
"""

from __future__ import annotations

from typing import Any

try:
    from trl import SFTConfig, SFTTrainer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"logitcache.integrations.trl needs TRL ({exc}); pip install 'logitcache[integrations]'"
    ) from exc

from logitcache.errors import ConfigError
from logitcache.integrations.transformers import DistillationMixin


class SFTDistillationTrainer(DistillationMixin, SFTTrainer):
    """``trl.SFTTrainer`` trained from a logitcache cache; ``processing_class`` is required
    (TRL would otherwise fetch one by the model's name)."""

    _allow_train_dataset = True

    def __init__(self, *args: Any, cache, **kwargs: Any):
        from logitcache.data.hf_dataset import to_hf_dataset

        sft_args = kwargs.get("args")
        if not isinstance(sft_args, SFTConfig):
            raise ConfigError(
                f"SFTDistillationTrainer needs args=trl.SFTConfig(...), got {type(sft_args).__name__}"
            )
        sft_args.dataset_kwargs = {**(sft_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        if kwargs.get("processing_class") is None:
            raise ConfigError(
                "SFTDistillationTrainer needs processing_class=<the teacher's tokenizer>; the "
                "cache's token ids are that tokenizer's"
            )
        uri = cache if isinstance(cache, str) else cache.uri
        storage_options = kwargs.get("storage_options")
        kwargs["train_dataset"] = to_hf_dataset(uri, storage_options=storage_options)
        super().__init__(*args, cache=cache, **kwargs)
