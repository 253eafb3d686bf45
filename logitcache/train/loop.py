"""The student training loop. Reads top to bottom: data, student, optimizer and schedule,
resume, then steps (micro-batches -> accumulate -> clip -> step), with periodic logging,
evaluation and checkpoints, and finally the saved student.

Costs worth knowing: the teacher costs nothing here (its targets stream from the cache);
``.item()`` calls are CPU-GPU sync points, so they happen only on logging steps; the loss
gathers the student at k teacher ids per position and never builds a dense teacher tensor.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

from logitcache.errors import ConfigError, LogitCacheError
from logitcache.format import open_cache
from logitcache.train.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from logitcache.train.config import TrainConfig
from logitcache.train.distributed import (
    barrier,
    gather_objects,
    init_distributed,
    resolve_device,
    shutdown,
)
from logitcache.train.evaluate import evaluate
from logitcache.train.heldout import effective_heldout_fraction
from logitcache.train.metrics import MetricsLog, plot_metrics
from logitcache.train.objective import StudentObjective
from logitcache.train.student import build_student

log = logging.getLogger(__name__)

STUDENT_DIR = "student"


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """AdamW; no weight decay on norms and biases (1-d parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, fused=device.type == "cuda" or None
    )


def crop(batch: dict[str, torch.Tensor], max_len: int | None) -> dict[str, torch.Tensor]:
    """Keep the first ``max_len`` positions of every [B, T, ...] tensor (memory cap)."""
    if max_len is None or batch["input_ids"].shape[1] <= max_len:
        return batch
    return {k: v[:, :max_len] for k, v in batch.items()}


def _config_drift(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    volatile = {
        "resume",
        "stop_after",
        "num_workers",
        "eval_every",
        "checkpoint_every",
        "log_every",
    }
    return [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in now.items()
        if k not in volatile and saved.get(k) != v
    ]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a student from ``cfg.cache`` into ``cfg.out``; returns the final metrics."""
    from logitcache.data import CacheDataset, make_dataloader

    dist_info = init_distributed(cfg.device)
    device = resolve_device(cfg.device, dist_info)
    is_main = dist_info.is_main
    os.makedirs(cfg.out, exist_ok=True)
    autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()

    # -- data: the train split streams shuffled; the held-out split is fixed by sample-id hash
    cache = open_cache(cfg.cache, cfg.storage_options)
    manifest = cache.manifest
    heldout_fraction = effective_heldout_fraction(cache, cfg.heldout_fraction)
    data_kw = dict(
        storage_options=cfg.storage_options,
        heldout_fraction=heldout_fraction,
        seed=cfg.seed,
    )
    # under DDP every rank must run the same number of steps, or the all-reduce hangs
    train_ds = CacheDataset(
        cfg.cache, split="train", shuffle=True, drop_uneven=dist_info.enabled, **data_kw
    )
    eval_ds = CacheDataset(cfg.cache, split="heldout", shuffle=False, **data_kw)
    pin = device.type == "cuda"

    # -- student (a cross-tokenizer student brings its own tokenizer and batches)
    cross = None
    if cfg.cross_tokenizer:
        from logitcache.train.cross_tokenizer import CrossTokenizerSetup

        cross = CrossTokenizerSetup.create(cfg, manifest)
        model, student_tokenizer = cross.model, cross.tokenizer
    else:
        model, student_tokenizer = build_student(cfg.student, manifest, seed=cfg.seed)
    model.to(device)
    collate_fn = cross.collate if cross is not None else None
    train_loader = make_dataloader(
        train_ds,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        collate_fn=collate_fn,
    )
    eval_loader = make_dataloader(
        eval_ds, batch_size=cfg.batch_size, num_workers=0, pin_memory=pin, collate_fn=collate_fn
    )

    # the model and its loss as one module (what DDP wraps); fused: no [B, T, V] logits
    objective = StudentObjective(model, cfg.loss, vocab_size=manifest.vocab_size, cross=cross)

    # -- optimizer, schedule
    if cfg.steps is not None:
        total_steps = cfg.steps
    else:  # estimate from the manifest; the loop itself stops when the epochs run out
        seqs = manifest.num_sequences * (1 - heldout_fraction) / dist_info.world_size
        total_steps = max(1, math.ceil(cfg.epochs * seqs / (cfg.batch_size * cfg.grad_accum)))
    warmup = (
        min(cfg.warmup, total_steps // 10) if cfg.steps is None else min(cfg.warmup, total_steps)
    )
    optimizer = make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(warmup, total_steps, cfg.min_lr_ratio)
    )

    # -- resume: model, optimizer, schedule, data position and RNG exactly as they were
    step, epoch, tokens_seen = 0, 0, 0
    if cfg.resume:
        state = load_checkpoint(cfg.out)
        for line in _config_drift(state["config"], cfg.to_dict()):
            log.warning("config changed since the checkpoint: %s", line)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, tokens_seen = state["step"], state["epoch"], state["tokens_seen"]
        loader_states = state["loader"]
        if len(loader_states) != dist_info.world_size:
            raise ConfigError(
                f"checkpoint was written by {len(loader_states)} ranks, this run has "
                f"{dist_info.world_size}; resume with the same torchrun --nproc-per-node"
            )
        train_ds.set_epoch(epoch)
        train_loader.load_state_dict(loader_states[dist_info.rank])
        set_rng_state(state["rng"])
        log.info("resumed from step %d (epoch %d)", step, epoch)
    else:
        train_ds.set_epoch(epoch)
    metrics_log = MetricsLog(cfg.out, resume_step=step if cfg.resume else None) if is_main else None

    ddp_objective = objective
    if dist_info.enabled:
        ddp_objective = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )

    batches = iter(train_loader)

    def next_batch() -> dict[str, torch.Tensor] | None:
        """The next training batch, moving to the next epoch when one runs out."""
        nonlocal batches, epoch
        for _ in range(2):  # at most one epoch boundary per call
            try:
                return next(batches)
            except StopIteration:
                epoch += 1
                if cfg.epochs is not None and epoch >= cfg.epochs:
                    return None
                train_ds.set_epoch(epoch)
                batches = iter(train_loader)
        raise ConfigError(f"the train split of {cfg.cache} is empty; lower --heldout-fraction")

    def checkpoint() -> None:
        loader_states = gather_objects(train_loader.state_dict())  # every rank's position
        if is_main:
            save_checkpoint(
                cfg.out,
                {
                    "step": step,
                    "epoch": epoch,
                    "tokens_seen": tokens_seen,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "loader": loader_states,
                    "rng": rng_state(),
                    "config": cfg.to_dict(),
                },
            )
        barrier()

    warned_empty: list[bool] = []

    def run_eval() -> dict[str, Any]:
        if cross is not None:
            from logitcache.train.cross_tokenizer import evaluate_cross

            result = evaluate_cross(
                model,
                eval_loader,
                device=device,
                vocab_size=manifest.vocab_size,
                max_batches=cfg.eval_batches,
                autocast=autocast,
                method=cross.method,
            )
        else:
            result = evaluate(
                objective,
                eval_loader,
                device=device,
                max_batches=cfg.eval_batches,
                autocast=autocast,
            )
        if result["eval_tokens"] == 0 and is_main and not warned_empty:
            warned_empty.append(True)
            log.warning(
                "the held-out split of %s is empty (%d sequences, --heldout-fraction %g): no "
                "eval metrics. Raise --heldout-fraction, or use a cache with more sequences.",
                cfg.cache,
                manifest.num_sequences,
                heldout_fraction,
            )
        if metrics_log is not None:
            metrics_log.write({"split": "eval", "step": step, "epoch": epoch, **result})
            log.info(
                "eval step %d: %s",
                step,
                ", ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float)),
            )
        return result

    # -- the loop
    progress = None
    if is_main and sys.stderr.isatty():
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=step, desc="train", unit="step")
    run_start_step, t0, last_eval = step, time.perf_counter(), {}
    if step == 0:
        last_eval = run_eval()  # the untrained student: the baseline of every curve
    model.train()
    done = False
    while step < total_steps and not done:
        sums = torch.zeros(3, device=device)  # loss, kd, ce over this step's micro-batches
        micro = 0
        for micro in range(cfg.grad_accum):
            batch = next_batch()
            if batch is None:  # the last epoch ended (possibly mid-accumulation)
                done = True
                break
            batch = crop(batch, cfg.max_seq_len)
            tokens_seen += int(batch["attention_mask"].sum())  # counted on CPU: no device sync
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            last_micro = micro == cfg.grad_accum - 1
            sync = nullcontext() if last_micro or not dist_info.enabled else ddp_objective.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss, m = ddp_objective(batch)  # student forward + loss (fused by default)
                (loss / cfg.grad_accum).backward()
            sums += torch.stack([m["loss"], m["kd"], m["ce"]]).to(device)
        else:
            micro = cfg.grad_accum
        if micro == 0:
            break
        if micro < cfg.grad_accum:  # short final accumulation: rescale to a mean
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(cfg.grad_accum / micro)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if progress is not None:
            progress.update(1)

        if is_main and (step % cfg.log_every == 0 or step == total_steps):
            elapsed = time.perf_counter() - t0
            record = {
                "split": "train",
                "step": step,
                "epoch": epoch,
                **dict(zip(("loss", "kd", "ce"), (sums / micro).tolist())),  # a sync point
                "grad_norm": float(grad_norm),
                "lr": scheduler.get_last_lr()[0],
                "tokens_seen": tokens_seen,
                "steps_per_s": (step - run_start_step) / max(elapsed, 1e-9),
            }
            metrics_log.write(record)
            if progress is not None:
                progress.set_postfix(loss=f"{record['loss']:.4f}")
            else:
                log.info(
                    "step %d/%d loss %.4f lr %.2e", step, total_steps, record["loss"], record["lr"]
                )
        if step % cfg.eval_every == 0:
            last_eval = run_eval()
        stopping = cfg.stop_after is not None and step - run_start_step >= cfg.stop_after
        if step % cfg.checkpoint_every == 0 or stopping:
            checkpoint()
        if stopping:
            log.info(
                "stopping after %d steps of this run (--stop-after); --resume continues",
                cfg.stop_after,
            )
            break
    if progress is not None:
        progress.close()

    finished = step >= total_steps or done
    if finished:
        if step % cfg.eval_every != 0:
            last_eval = run_eval()
        if step % cfg.checkpoint_every != 0:
            checkpoint()
        if is_main:
            save_student(model, student_tokenizer, manifest, os.path.join(cfg.out, STUDENT_DIR))
    if is_main:
        plot_metrics(cfg.out)
    barrier()
    shutdown()
    return {
        "step": step,
        "epoch": epoch,
        "tokens_seen": tokens_seen,
        "finished": finished,
        **last_eval,
    }


def save_student(model: torch.nn.Module, tokenizer: Any, manifest, path: str) -> None:
    """safetensors + config (+ the tokenizer when one is at hand), loadable by transformers."""
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer is None:
        tokenizer = _teacher_tokenizer(manifest)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    log.info("student saved to %s%s", path, "" if tokenizer is not None else " (no tokenizer)")


def _teacher_tokenizer(manifest) -> Any | None:
    """The cache's teacher tokenizer (the student's too), if it loads here and its vocabulary
    hash matches the manifest; None otherwise."""
    from logitcache.train.student import vocab_sha256

    for spec in dict.fromkeys(
        filter(None, (manifest.teacher.get("name"), manifest.teacher.get("source")))
    ):
        try:
            from logitcache.teachers import TeacherConfig, load_tokenizer

            tokenizer = load_tokenizer(TeacherConfig(teacher=spec, backend="transformers"))
        except (ImportError, LogitCacheError, OSError, ValueError, TypeError) as exc:
            log.debug("teacher tokenizer %r not loadable: %s", spec, exc)
            continue
        if vocab_sha256(tokenizer) == manifest.tokenizer.get("vocab_sha256"):
            return tokenizer
        log.warning("tokenizer of %r does not match the cache's vocab_sha256; not saving it", spec)
    log.info("the teacher's tokenizer is not available here; saving the student without one")
    return None
