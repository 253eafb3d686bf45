"""Train where users already train: transformers ``Trainer``, TRL ``SFTTrainer``, Ray Train.

- :class:`~logitcache.integrations.transformers.DistillationTrainer` (``transformers``)
- :class:`~logitcache.integrations.trl.SFTDistillationTrainer` (``pip install trl``)
- :class:`~logitcache.integrations.batches.RankBatches`: equal-length per-rank batches, the
  piece both trainers (and a hand-written DDP loop) share.

Each submodule imports its framework only when imported itself. docs/integrations.md is the
guide.
"""
