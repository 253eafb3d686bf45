"""One training loop for every arm of the distillation benchmark, and one evaluation.

Every arm gets the same student init (``preset_student(seed=...)``), the same batches in the
same order (the train cache read by ``CacheDataset(shuffle=True, seed=seed)``; CE-only and
online KD read only ``input_ids``/``labels`` from it), AdamW with the trainer's grouping, the
trainer's warmup + cosine schedule, and the same number of steps. Arms differ only in the
targets of the loss:

* ``ce``: hard labels;
* ``online``: the teacher runs on the batch at every step and the loss is the full-vocabulary
  ``KL(p || q)`` (the reference that caching approximates);
* cached arms: ``logitcache.losses.compute_loss`` on the collated cache batch (``kl_tail``,
  ``kl_topk``, ``rs_kd``), the top-k view derived in-loop for k < 128 (its cost is counted).

Evaluation is identical for every arm: held-out rows from held-out *documents*, scored against
the teacher's dense log-probs: CE on true tokens, full ``KL(p || q)``, top-1 agreement, and
the student's expected calibration error (10 equal-width confidence bins, vs the true token).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks._distill_data import Heldout, derive_topk

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Arm:
    """A training recipe: ``kind`` in ce | online | kl_tail | kl_topk | rs_kd; ``k`` for top-k."""

    name: str
    kind: str
    k: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("ce", "online", "kl_tail", "kl_topk", "rs_kd"):
            raise ValueError(f"arm {self.name!r}: unknown kind {self.kind!r}")
        if self.kind in ("kl_tail", "kl_topk") and not self.k:
            raise ValueError(f"arm {self.name!r}: top-k kinds need k >= 1")


ARMS = (
    Arm(name="ce", kind="ce"),
    Arm(name="online_full_kd", kind="online"),
    Arm(name="topk8_tail", kind="kl_tail", k=8),
    Arm(name="topk32_tail", kind="kl_tail", k=32),
    Arm(name="topk128_tail", kind="kl_tail", k=128),
    Arm(name="topk32_renorm", kind="kl_topk", k=32),
    Arm(name="rs50", kind="rs_kd"),
)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Optimiser and schedule shared by every arm."""

    epochs: int = 2
    batch_size: int = 4
    lr: float = 2e-3
    warmup: int = 4
    weight_decay: float = 0.1
    evals: int = 4  # evaluation points after step 0


@torch.no_grad()
def evaluate(model, held: Heldout, *, device: torch.device, rows_per_chunk: int = 4) -> dict:
    """Token-weighted held-out CE, full KL(teacher || student), top-1 agreement, ECE."""
    was = model.training
    model.eval()
    n = ce = kl = hits = 0.0
    conf_all, correct_all = [], []
    offset = 0
    for r0 in range(0, held.input_ids.shape[0], rows_per_chunk):
        sl = slice(r0, r0 + rows_per_chunk)
        ids = held.input_ids[sl].to(device)
        logits = model(input_ids=ids, attention_mask=held.attention_mask[sl].to(device)).logits
        mask = held.labels[sl].to(device) != -100
        z = logits[mask].float()
        m = z.shape[0]
        p_lp = held.teacher_logprobs[offset : offset + m].to(device).float()
        offset += m
        logq = torch.log_softmax(z, -1)
        y = held.labels[sl].to(device)[mask]
        ce += -logq.gather(-1, y[:, None]).sum().item()
        kl += (p_lp.exp() * (p_lp - logq)).sum().item()
        pred = logq.argmax(-1)
        hits += (pred == p_lp.argmax(-1)).sum().item()
        conf_all.append(logq.max(-1).values.exp().cpu())
        correct_all.append((pred == y).float().cpu())
        n += m
    conf, correct = torch.cat(conf_all), torch.cat(correct_all)
    bins = torch.clamp((conf * 10).long(), max=9)
    ece = sum(
        (bins == b).sum().item()
        / n
        * abs(conf[bins == b].mean() - correct[bins == b].mean()).item()
        for b in range(10)
        if (bins == b).any()
    )
    model.train(was)
    return {
        "ce": ce / n,
        "kl": kl / n,
        "top1": hits / n,
        "ece": ece,
        "mean_conf": conf.mean().item(),
        "accuracy": correct.mean().item(),
    }


def _optimizer(model, sched: Schedule):
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": sched.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=sched.lr, betas=(0.9, 0.95))


def _online_loss(teacher, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Full-vocabulary forward KL against the teacher run on this batch now."""
    with torch.no_grad():  # the teacher's forward: the cost that the cache removes
        t_logits = teacher.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long()
        ).logits
    mask = batch["labels"] != -100
    p_lp = torch.log_softmax(t_logits[mask].float(), -1)
    logq = torch.log_softmax(logits[mask].float(), -1)
    width = min(p_lp.shape[-1], logq.shape[-1])
    return (p_lp[:, :width].exp() * (p_lp[:, :width] - logq[:, :width])).sum(-1).mean()


def train_arm(
    arm: Arm,
    *,
    cache_uri: str,
    held: Heldout,
    student: str,
    seed: int,
    sched: Schedule,
    device: torch.device,
    teacher=None,
) -> dict[str, Any]:
    """Train one arm from scratch; return its curve, final metrics and timings."""
    from logitcache.data import CacheDataset, make_dataloader
    from logitcache.losses import LossConfig, compute_loss
    from logitcache.train.loop import lr_lambda
    from logitcache.train.student import preset_student

    if arm.kind == "online" and teacher is None:
        raise ValueError("online KD needs the teacher")
    ds = CacheDataset(cache_uri, split="all", shuffle=True, seed=seed)
    loader = make_dataloader(ds, batch_size=sched.batch_size)
    manifest = ds.manifest
    steps_per_epoch = math.ceil(ds.num_samples() / sched.batch_size)
    total = steps_per_epoch * sched.epochs
    eval_at = {round(total * (i + 1) / sched.evals) for i in range(sched.evals)}

    model = preset_student(student, manifest, seed=seed).to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = _optimizer(model, sched)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(sched.warmup, total, 0.1))
    loss_cfg = None if arm.kind == "online" else LossConfig(kind=arm.kind)

    curve = [{"step": 0, "tokens": 0, **evaluate(model, held, device=device)}]
    step = tokens = 0
    epoch_s: list[float] = []
    for epoch in range(sched.epochs):
        ds.set_epoch(epoch)
        train_s = 0.0
        t0 = time.perf_counter()
        for batch in loader:
            batch = {key: v.to(device) for key, v in batch.items()}
            if arm.k is not None and arm.k < batch["topk_ids"].shape[-1]:
                batch = derive_topk(batch, arm.k)
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            if loss_cfg is None:
                loss = _online_loss(teacher, logits, batch)
            else:
                loss, _ = compute_loss(logits, batch, loss_cfg, vocab_size=manifest.vocab_size)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            lr_sched.step()
            step += 1
            tokens += int((batch["labels"] != -100).sum())
            if step in eval_at:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                train_s += time.perf_counter() - t0  # evaluation time is not training time
                curve.append(
                    {"step": step, "tokens": tokens, **evaluate(model, held, device=device)}
                )
                log.info("%s seed %d step %d/%d: %s", arm.name, seed, step, total, curve[-1])
                t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s += time.perf_counter() - t0
        epoch_s.append(train_s)
    return {
        "arm": arm.name,
        "kind": arm.kind,
        "k": arm.k,
        "seed": seed,
        "student": student,
        "student_params": params,
        "steps": total,
        "train_tokens": tokens,
        "epoch_s": epoch_s,
        "final": curve[-1],
        "curve": curve,
    }


def paired_step_times(
    arm: Arm,
    *,
    cache_uri: str,
    student: str,
    teacher,
    batch_size: int,
    device: torch.device,
    steps: int = 8,
) -> dict[str, float]:
    """Median seconds per training step of ``arm`` (from the cache) and of online KD, timed
    *interleaved* on the same batches (order alternating) so that load from other processes on
    a shared machine hits both alike; epoch wall times alone are too noisy there."""
    from logitcache.data import CacheDataset, make_dataloader
    from logitcache.losses import LossConfig, compute_loss
    from logitcache.train.student import preset_student

    ds = CacheDataset(cache_uri, split="all", shuffle=True, seed=0)
    manifest = ds.manifest
    models = {name: preset_student(student, manifest, seed=0).to(device) for name in ("c", "o")}
    opts = {name: _optimizer(m, Schedule()) for name, m in models.items()}
    loss_cfg = LossConfig(kind=arm.kind)

    def step(name: str, batch: dict[str, torch.Tensor]) -> float:
        t0 = time.perf_counter()
        b = {key: v.to(device) for key, v in batch.items()}
        if name == "c" and arm.k is not None and arm.k < b["topk_ids"].shape[-1]:
            b = derive_topk(b, arm.k)
        model = models[name]
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        if name == "o":
            loss = _online_loss(teacher, logits, b)
        else:
            loss, _ = compute_loss(logits, b, loss_cfg, vocab_size=manifest.vocab_size)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"c": [], "o": []}
    loader = make_dataloader(ds, batch_size=batch_size)
    for i, batch in enumerate(loader):
        if i > steps:
            break
        order = ("c", "o") if i % 2 else ("o", "c")
        for name in order:
            times[name].append(step(name, batch))
    import statistics

    if len(times["c"]) > 1:  # the first batch warms up allocators and kernels
        times = {name: t[1:] for name, t in times.items()}
    return {
        "cached_step_s": statistics.median(times["c"]),
        "online_step_s": statistics.median(times["o"]),
        "steps": len(times["c"]),
    }
