"""``DistillationTrainer``: a ``transformers.Trainer`` that distils from a cache.

A script that trains with ``Trainer`` switches to cached-logit distillation by changing the class
and passing the cache::

    trainer = DistillationTrainer(
        model=student,
        args=TrainingArguments("runs/s1", max_steps=1000, per_device_train_batch_size=8),
        cache="s3://bucket/caches/c1",
        loss=LossConfig(kind="kl_tail", temperature=2.0, alpha=0.1),
    )
    trainer.train()

What it changes in ``Trainer`` and why:

- Data: the train loader is :class:`~logitcache.integrations.batches.RankBatches` over a
  :class:`~logitcache.data.CacheDataset` built for this process's rank. It is not passed to
  ``accelerator.prepare``: accelerate would dispatch batches from the main process on top of the
  cache's own rank partitioning. Ranks get the same number of batches per epoch (zero-loss
  fillers pad the smaller shares), so every sample is seen exactly once per epoch on any number
  of processes.
- Resume: each rank's loader state goes into the checkpoint (``logitcache_loader/rank-R.pt``);
  ``train(resume_from_checkpoint=...)`` continues mid-epoch with exactly the remaining batches
  instead of Trainer's re-read-and-skip.
- Loss: :func:`logitcache.losses.compute_loss` on the student's logits (labels never reach the
  model's own loss), token-weighted across gradient-accumulation steps and ranks; ``kd`` and
  ``ce`` are logged beside ``loss``.
- ``max_steps``: required by Trainer for streamed data; when unset it is computed from
  ``num_train_epochs`` and the cache's metadata.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from transformers import Trainer

from logitcache.data import CacheDataset
from logitcache.errors import ConfigError, LoaderStateError
from logitcache.integrations.batches import RankBatches
from logitcache.losses import LossConfig, compute_loss

log = logging.getLogger(__name__)
LOADER_DIR = "logitcache_loader"


def _dataset_for_rank(
    cache: str | CacheDataset,
    rank: int,
    world: int,
    storage_options: Any,
    options: dict[str, Any],
) -> CacheDataset:
    """The cache as a ``CacheDataset`` partitioned for (rank, world), whatever it was built for."""
    if isinstance(cache, CacheDataset):
        if options:
            raise ConfigError(
                "cache is already a CacheDataset: set its options there, not in cache_options"
            )
        if (cache.rank, cache.world_size) == (rank, world):
            return cache
        # Built before the process group existed (rank 0 of 1): rebuild it for this rank.
        config = replace(cache.config, rank=rank, world_size=world)
        return CacheDataset(cache.uri, storage_options=cache._storage_options, config=config)
    if not isinstance(cache, str):
        raise ConfigError(
            f"cache must be a cache URI or a logitcache.data.CacheDataset, got {type(cache).__name__}"
        )
    return CacheDataset(
        cache, storage_options=storage_options, rank=rank, world_size=world, **options
    )


def _fusable(model, cfg: LossConfig) -> tuple[bool, float | None]:
    """(use the fused loss?, its logit soft-cap): yes for the default ``impl="fused"`` when
    the fused loss exists, the model's forward can skip its logits (``logits_to_keep``), and
    its logits equal the output layer on the last hidden state (checked on a few positions)."""
    import inspect

    if getattr(cfg, "impl", None) != "fused":
        return False, None
    try:
        from logitcache.losses import fused_loss  # noqa: F401
        from logitcache.train.objective import check_fusable
    except ImportError:
        return False, None
    try:
        params = inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return False, None
    if "logits_to_keep" not in params:
        log.info("%s cannot skip its logits; using the dense loss", type(model).__name__)
        return False, None
    from logitcache.errors import ConfigError as _ConfigError

    try:
        softcap = check_fusable(model)
    except _ConfigError as exc:
        log.info("dense loss: %s", exc)
        return False, None
    head = model.get_output_embeddings()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ids = torch.arange(8, device=head.weight.device)[None] % head.weight.shape[0]
            out = model(input_ids=ids, output_hidden_states=True)
            if getattr(out, "hidden_states", None) is None:
                return False, None
            z = out.hidden_states[-1].float() @ head.weight.float().t()
            if getattr(head, "bias", None) is not None:
                z = z + head.bias.float()
            if softcap:
                z = torch.tanh(z / softcap) * softcap
            same = torch.allclose(z, out.logits.float(), rtol=1e-3, atol=1e-3)
    finally:
        model.train(was_training)
    if not same:
        log.info("%s: hidden_states[-1] is not the output layer's input; dense loss", type(model))
        return False, None
    return True, softcap


class DistillationMixin:
    """The cache-driven parts of :class:`DistillationTrainer`, for any ``Trainer`` subclass
    (TRL's ``SFTTrainer`` in :mod:`logitcache.integrations.trl`). Put it first in the bases."""

    def __init__(
        self,
        *args: Any,
        cache: str | CacheDataset,
        loss: LossConfig | None = None,
        eval_cache: str | CacheDataset | None = None,
        storage_options: Any = None,
        cache_options: dict[str, Any] | None = None,
        eval_options: dict[str, Any] | None = None,
        cross_tokenizer: str | None = None,
        teacher_tokenizer: Any = None,
        **kwargs: Any,
    ):
        if cache is None:
            raise ConfigError("DistillationTrainer needs cache=URI or a CacheDataset to train from")
        if kwargs.get("train_dataset") is not None and not getattr(
            self, "_allow_train_dataset", False
        ):
            raise ConfigError(
                "pass the cache as cache=..., not train_dataset=...: the cache is the training data"
            )
        self.loss_config = loss if loss is not None else LossConfig()
        if not isinstance(self.loss_config, LossConfig):
            raise ConfigError(f"loss must be a logitcache.losses.LossConfig, got {loss!r}")
        args_ = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        if args_ is None:
            raise ConfigError("DistillationTrainer needs args=TrainingArguments(output_dir=...)")
        rank, world = int(args_.process_index), int(args_.world_size)
        self.cache_dataset = _dataset_for_rank(
            cache, rank, world, storage_options, dict(cache_options or {})
        )
        self._eval_dataset = None
        if eval_cache is not None:
            opts = dict(eval_options or {})
            if isinstance(eval_cache, str):
                opts.setdefault("shuffle", False)
            self._eval_dataset = _dataset_for_rank(eval_cache, rank, world, storage_options, opts)
        self.cross = None
        if cross_tokenizer is not None:
            self.cross = self._cross_setup(
                cross_tokenizer, teacher_tokenizer, storage_options, kwargs
            )
        elif teacher_tokenizer is not None:
            raise ConfigError("teacher_tokenizer is used only with cross_tokenizer='uld'|'gold'")
        self.train_batches = RankBatches(
            self.cache_dataset,
            batch_size=int(args_.per_device_train_batch_size),
            num_workers=int(args_.dataloader_num_workers),
            grad_accum=int(args_.gradient_accumulation_steps),
            pin_memory=bool(args_.dataloader_pin_memory) and torch.cuda.is_available(),
            collate_fn=self.cross.collate if self.cross is not None else None,
        )
        self._metric_sums: torch.Tensor | None = None
        self._fused: bool | None = None
        self._softcap: float | None = None
        if args_.max_steps is None or args_.max_steps <= 0:
            args_.max_steps = self._steps_for_epochs(float(args_.num_train_epochs))
            log.info(
                "max_steps=%d: %s epoch(s) of the cache at this batch size, processes and "
                "gradient accumulation",
                args_.max_steps,
                args_.num_train_epochs,
            )
        super().__init__(*args, **kwargs)
        # compute_loss below returns a loss already normalised over the accumulated tokens
        self.loss_is_scaled_for_ga = True
        self._check_student()

    # -- setup ----------------------------------------------------------------------------
    @property
    def manifest(self):
        return self.cache_dataset.manifest

    def _cross_setup(self, method, teacher_tokenizer, storage_options, kwargs):
        """A student with its own tokenizer (``processing_class``): docs/cross-tokenizer.md."""
        from logitcache.train.cross_tokenizer import (
            CrossTokenizerSetup,
            build_cross_collate,
            check_method,
        )

        check_method(method, self.loss_config)
        tok = kwargs.get("processing_class")
        tok = getattr(tok, "tokenizer", tok)
        if tok is None:
            raise ConfigError(
                "cross_tokenizer needs the student's own tokenizer: pass "
                "processing_class=AutoTokenizer.from_pretrained(STUDENT_DIR)"
            )
        model = kwargs.get("model")
        max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        collate = build_cross_collate(
            self.manifest,
            self.cache_dataset.uri,
            tok,
            method=method,
            teacher_tokenizer=teacher_tokenizer,
            storage_options=storage_options,
            max_len=max_len,
            sample_ids=True,
        )
        return CrossTokenizerSetup(method, collate, self.manifest.vocab_size, tokenizer=tok)

    def _check_student(self) -> None:
        from logitcache.train.student import check_vocabulary

        tok = getattr(self, "processing_class", None)
        tok = getattr(tok, "tokenizer", tok)  # a processor wraps its tokenizer
        model = self.model
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        if self.cross is not None:  # the student reads its own ids: its tokenizer must fit it
            rows = int(model.get_input_embeddings().weight.shape[0])
            if rows < len(tok):
                raise ConfigError(
                    f"student {name!r} has {rows} embedding rows but its tokenizer has "
                    f"{len(tok)} ids; call model.resize_token_embeddings(len(tokenizer))"
                )
            return
        check_vocabulary(
            model, tok if hasattr(tok, "get_vocab") else None, self.manifest, name=name
        )

    def _steps_for_epochs(self, epochs: float) -> int:
        if not epochs > 0:
            raise ConfigError(
                f"num_train_epochs={epochs} and max_steps unset: give max_steps > 0 or "
                "num_train_epochs > 0"
            )
        whole = int(math.floor(epochs))
        steps = self.train_batches.steps_in_epochs(whole)
        frac = epochs - whole
        if frac > 0:
            per_step = self.train_batches.grad_accum
            steps += math.ceil(frac * self.train_batches.batches_in_epoch(whole) / per_step)
        return max(1, steps)

    # -- data -----------------------------------------------------------------------------
    def get_train_dataloader(self):
        return self.train_batches

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The next micro-batches and their target-token count, summed over ranks: every rank
        holds the same number of batches, so the collective below always matches up."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if not batches:
            return batches, None
        count = sum(int((b["labels"] != -100).sum()) for b in batches)
        items = torch.tensor(count, device=device, dtype=torch.long)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            items = self.accelerator.gather(items).sum()
        return batches, items

    # -- loss -----------------------------------------------------------------------------
    @property
    def fused(self) -> bool:
        """Whether the loss runs fused with the output layer (no ``[B, T, V]`` logits)."""
        if self._fused is None:
            self._fused, self._softcap = _fusable(self.model, self.loss_config)
        return self._fused

    def student_loss(self, model, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict, Any]:
        """Mean loss over this batch's target positions, its metrics and the model outputs.

        Fused (the default for a transformers causal LM whose logits are its output layer
        applied to the last hidden state): the forward goes through ``model`` (so DDP sees
        it) but keeps no logits, and :func:`logitcache.losses.fused_loss` applies the output
        layer chunk by chunk. Otherwise the dense :func:`logitcache.losses.compute_loss`.
        """
        ids, attn = inputs["input_ids"], inputs["attention_mask"]
        v = self.manifest.vocab_size
        if self.fused:
            from logitcache.losses import fused_loss

            none = torch.zeros(0, dtype=torch.long, device=ids.device)
            outputs = model(
                input_ids=ids,
                attention_mask=attn,
                use_cache=False,
                output_hidden_states=True,
                logits_to_keep=none,
            )
            head = self.model.get_output_embeddings()
            if self.cross is not None:  # ULD / GOLD on the student's own ids, chunk by chunk
                loss, metrics = self.cross.loss_from_hidden(
                    outputs.hidden_states[-1],
                    head.weight,
                    getattr(head, "bias", None),
                    inputs,
                    self.loss_config,
                    softcap=self._softcap,
                )
                return loss, metrics, outputs
            loss, metrics = fused_loss(
                outputs.hidden_states[-1],
                head.weight,
                inputs,
                self.loss_config,
                bias=getattr(head, "bias", None),
                vocab_size=v,
                softcap=self._softcap,
            )
            return loss, metrics, outputs
        outputs = model(input_ids=ids, attention_mask=attn, use_cache=False)
        if self.cross is not None:
            loss, metrics = self.cross.loss(outputs.logits, inputs, self.loss_config)
        else:
            loss, metrics = compute_loss(outputs.logits, inputs, self.loss_config, vocab_size=v)
        return loss, metrics, outputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, metrics, outputs = self.student_loss(model, inputs)
        tokens = metrics["tokens"].to(loss.device)
        if num_items_in_batch is not None:
            # Token-weighted over the accumulated micro-batches (and ranks): a filler batch
            # adds nothing, a long batch counts by its targets.
            total = torch.as_tensor(num_items_in_batch, device=loss.device).clamp(min=1)
            loss = loss * tokens / total
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients
        if model.training:
            row = torch.stack(
                [metrics["kd"] * tokens, metrics["ce"] * tokens, tokens.to(metrics["kd"].dtype)]
            ).detach()
            self._metric_sums = row if self._metric_sums is None else self._metric_sums + row
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds ``kd`` and ``ce`` (token-weighted since the last log, over all ranks)."""
        if "loss" in logs and not any(k.startswith("eval_") for k in logs):
            sums = self._metric_sums
            if sums is None:
                sums = torch.zeros(3, device=self.args.device)
            if self.args.world_size > 1:
                sums = self.accelerator.reduce(sums.to(self.args.device), reduction="sum")
            tokens = float(sums[2])
            if tokens > 0:
                logs["kd"] = round(float(sums[0]) / tokens, 6)
                logs["ce"] = round(float(sums[1]) / tokens, 6)
            self._metric_sums = None
        super().log(logs, *args, **kwargs)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """With ``eval_cache``: token-weighted loss, kd and ce over the whole eval cache (each
        rank reads its share; one all-reduce at the end). Otherwise ``Trainer.evaluate``."""
        if eval_dataset is not None or self._eval_dataset is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        from torchdata.stateful_dataloader import StatefulDataLoader

        from logitcache.integrations.batches import collate_with_ids

        m = self._eval_dataset.manifest
        pad = m.tokenizer.get("pad_token_id")
        if self.cross is not None:
            if m.tokenizer.get("vocab_sha256") != self.manifest.tokenizer.get("vocab_sha256"):
                raise ConfigError(
                    "eval_cache was built with another teacher tokenizer than cache; a "
                    "cross-tokenizer run evaluates on a cache of the same teacher"
                )
            collate_fn = self.cross.collate
        else:
            collate_fn = partial(
                collate_with_ids, pad_id=0 if pad is None else int(pad), rs_samples=m.rs_samples
            )
        loader = StatefulDataLoader(
            self._eval_dataset,
            batch_size=int(self.args.per_device_eval_batch_size),
            num_workers=int(self.args.dataloader_num_workers),
            collate_fn=collate_fn,
        )
        model = self.model
        was_training = model.training
        model.eval()
        sums = torch.zeros(4, device=self.args.device, dtype=torch.float64)
        with torch.no_grad():
            for batch in loader:
                batch = self._prepare_inputs(batch)
                loss, metrics, _ = self.student_loss(model, batch)
                n = metrics["tokens"].to(sums.device).double()
                sums += torch.stack(
                    [loss.double() * n, metrics["kd"].double() * n, metrics["ce"].double() * n, n]
                )
        if was_training:
            model.train()
        if self.args.world_size > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        n = float(sums[3])
        metrics = {f"{metric_key_prefix}_tokens": n}
        if n > 0:
            for i, name in enumerate(("loss", "kd", "ce")):
                metrics[f"{metric_key_prefix}_{name}"] = float(sums[i]) / n
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics

    # -- checkpoint / resume --------------------------------------------------------------
    def _loader_state_path(self, checkpoint: str) -> str:
        return os.path.join(checkpoint, LOADER_DIR, f"rank-{self.args.process_index}.pt")

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        path = self._loader_state_path(folder)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save(self.train_batches.state_dict(), tmp)
        os.replace(tmp, path)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train``; on resume, this rank's loader continues where the checkpoint was."""
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint found in {self.args.output_dir} to resume from")
        restore = None
        if resume_from_checkpoint:
            path = self._loader_state_path(str(resume_from_checkpoint))
            if os.path.exists(path):
                # A checkpoint holds tensors and plain values only (our own file, not cache data).
                self.train_batches.load_state_dict(torch.load(path, weights_only=True))
                # Our loader resumes itself; Trainer's re-read-and-skip would skip twice.
                restore, self.args.ignore_data_skip = self.args.ignore_data_skip, True
            elif not self.args.ignore_data_skip:
                raise LoaderStateError(
                    f"checkpoint {resume_from_checkpoint} has no {LOADER_DIR}/ state for rank "
                    f"{self.args.process_index} (was it saved by another trainer or a different "
                    "number of processes?). Pass ignore_data_skip=True in TrainingArguments to "
                    "restart the data from the beginning of an epoch."
                )
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            if restore is not None:
                self.args.ignore_data_skip = restore


class DistillationTrainer(DistillationMixin, Trainer):
    """``transformers.Trainer`` trained from a logitcache cache (see the module docstring).

    ``DistillationTrainer(model=..., args=TrainingArguments(...), cache=URI or CacheDataset,
    loss=LossConfig(...), eval_cache=None)``; any other ``Trainer`` keyword passes through.
    ``cache_options`` / ``eval_options`` are :class:`~logitcache.data.LoaderConfig` fields for
    caches given as URIs (e.g. ``{"split": "train"}``). ``cross_tokenizer="uld"|"gold"``
    trains a student whose own tokenizer (``processing_class``) differs from the teacher's
    (docs/cross-tokenizer.md); ``teacher_tokenizer`` overrides the one the manifest names.
    """
