"""One training loop for every arm of the distillation benchmark, and one evaluation.

Every arm gets the same student init (``preset_student(seed=...)``), the same batches in the
same order (the train cache read by ``CacheDataset(shuffle=True, seed=seed)``; CE-only and
online KD read only ``input_ids``/``labels`` from it), AdamW with the trainer's grouping, the
trainer's warmup + cosine schedule, and the same number of steps. Arms differ only in the
targets of the loss:

* ``ce``: hard labels;
* ``online``: the teacher runs on the batch at every step and the loss is the full-vocabulary
  ``KL(p || q)`` on the student's dense logits (the reference that caching approximates);
* CE and cached arms: the trainer's own objective (``logitcache.train.objective``; the fused
  output layer + loss by default, no ``[N, V]`` logits) on the collated cache batch
  (``ce``, ``kl_tail``, ``kl_topk``, ``rs_kd``), the top-k view derived in-loop for k < 128
  (its cost is counted). bf16 autocast on CUDA, float32 on CPU.

Evaluation is identical for every arm: held-out rows from held-out *documents*, scored against
the teacher's dense log-probs: CE on true tokens, full ``KL(p || q)``, top-1 agreement, the
student's expected calibration error (10 equal-width confidence bins, vs the true token) and
the exact speculative acceptance ``alpha = E[sum_v min(p, q)]``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
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


class _Metrics:
    """Token-weighted sums of the held-out metrics, fed chunk by chunk."""

    def __init__(self) -> None:
        self.n = self.ce = self.kl = self.hits = self.alpha = 0.0
        self.conf: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []

    def add(self, logq: torch.Tensor, p_lp: torch.Tensor, y: torch.Tensor) -> None:
        """``logq``/``p_lp``: student / teacher log-probs ``[m, V]``; ``y``: true ids ``[m]``."""
        self.ce += -logq.gather(-1, y[:, None]).sum().item()
        self.kl += (p_lp.exp() * (p_lp - logq)).sum().item()
        self.alpha += torch.minimum(p_lp.exp(), logq.exp()).sum().item()  # sum_v min(p, q)
        pred = logq.argmax(-1)
        self.hits += (pred == p_lp.argmax(-1)).sum().item()
        self.conf.append(logq.max(-1).values.exp().cpu())
        self.correct.append((pred == y).float().cpu())
        self.n += logq.shape[0]

    def result(self) -> dict[str, float]:
        from logitcache.losses.acceptance import expected_tokens_per_round

        n = self.n
        conf, correct = torch.cat(self.conf), torch.cat(self.correct)
        bins = torch.clamp((conf * 10).long(), max=9)
        ece = sum(
            (bins == b).sum().item()
            / n
            * abs(conf[bins == b].mean() - correct[bins == b].mean()).item()
            for b in range(10)
            if (bins == b).any()
        )
        alpha = self.alpha / n
        return {
            "ce": self.ce / n,
            "kl": self.kl / n,
            "top1": self.hits / n,
            "ece": ece,
            "mean_conf": conf.mean().item(),
            "accuracy": correct.mean().item(),
            "alpha": alpha,
            "tokens_per_round_g4": expected_tokens_per_round(min(alpha, 1.0), GAMMA),
        }


GAMMA = 4  # drafted tokens per speculative round in the reported expectation


@torch.no_grad()
def evaluate(
    model, held: Heldout, *, device: torch.device, rows_per_chunk: int = 4, rows: int | None = None
) -> dict:
    """Token-weighted held-out CE, full KL(teacher || student), top-1 agreement, ECE and the
    exact speculative acceptance alpha = E[sum_v min(p, q)] (first ``rows`` rows if given)."""
    was = model.training
    model.eval()
    acc = _Metrics()
    offset = 0
    n_rows = held.input_ids.shape[0] if rows is None else min(rows, held.input_ids.shape[0])
    for r0 in range(0, n_rows, rows_per_chunk):
        sl = slice(r0, min(r0 + rows_per_chunk, n_rows))
        ids = held.input_ids[sl].to(device)
        with _autocast(device):
            logits = model(input_ids=ids, attention_mask=held.attention_mask[sl].to(device)).logits
        mask = held.labels[sl].to(device) != -100
        z = logits[mask].float()
        m = z.shape[0]
        p_lp = held.teacher_logprobs[offset : offset + m].to(device).float()
        offset += m
        width = min(p_lp.shape[-1], z.shape[-1])
        acc.add(
            torch.log_softmax(z, -1)[:, :width], p_lp[:, :width], held.labels[sl].to(device)[mask]
        )
    model.train(was)
    return acc.result()


@torch.no_grad()
def unigram_baseline(cache_uri: str, held: Heldout, *, device: torch.device) -> dict:
    """The metrics of a model that ignores the context: the train cache's target-token
    frequencies (add-0.5 smoothing over the teacher's vocabulary), scored like every arm."""
    from logitcache.format import open_cache

    cache = open_cache(cache_uri)
    vocab = held.teacher_logprobs.shape[-1]
    counts = torch.full((vocab,), 0.5, dtype=torch.float64)
    for s in cache.iter_samples():
        ids = torch.from_numpy(s["input_ids"][1:].astype("int64"))
        keep = torch.from_numpy(s["loss_mask"][:-1].astype(bool)) if "loss_mask" in s else None
        ids = ids[keep] if keep is not None else ids
        counts += torch.bincount(ids.clamp(max=vocab - 1), minlength=vocab).double()
    logq = (counts / counts.sum()).log().float().to(device)
    acc = _Metrics()
    mask = held.labels != -100
    y = held.labels[mask].to(device)
    for start in range(0, held.tokens, 1024):
        p_lp = held.teacher_logprobs[start : start + 1024].to(device).float()
        acc.add(logq.expand(p_lp.shape[0], -1), p_lp, y[start : start + p_lp.shape[0]])
    return acc.result()


@torch.no_grad()
def alpha_bound_check(
    model, held: Heldout, *, ks, device: torch.device, rows: int | None = None
) -> dict:
    """What ``logitcache train`` would report from a top-k + tail cache: the lower and upper
    bounds of alpha (``logitcache.losses.acceptance``) at each k, beside the exact value."""
    from logitcache.losses.acceptance import acceptance_bounds, acceptance_dense

    was = model.training
    model.eval()
    sums = {"exact": 0.0, **{f"k{k}_{b}": 0.0 for k in ks for b in ("lower", "upper")}}
    n = offset = 0
    n_rows = held.input_ids.shape[0] if rows is None else min(rows, held.input_ids.shape[0])
    for r0 in range(0, n_rows, 4):
        sl = slice(r0, min(r0 + 4, n_rows))
        with _autocast(device):
            logits = model(
                input_ids=held.input_ids[sl].to(device),
                attention_mask=held.attention_mask[sl].to(device),
            ).logits
        mask = held.labels[sl].to(device) != -100
        z = logits[mask].float()
        p_lp = held.teacher_logprobs[offset : offset + z.shape[0]].to(device).float()
        offset += z.shape[0]
        z = z[:, : p_lp.shape[-1]]
        sums["exact"] += acceptance_dense(p_lp, z).sum().item()
        for k in ks:
            lp, ids = p_lp.topk(k, dim=-1)
            tail = torch.log1p(-lp.exp().sum(-1).clamp(max=1 - 1e-7))
            lo, hi = acceptance_bounds(z, ids, lp, tail)
            sums[f"k{k}_lower"] += lo.sum().item()
            sums[f"k{k}_upper"] += hi.sum().item()
        n += z.shape[0]
    model.train(was)
    return {key: v / max(1, n) for key, v in sums.items()}


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (as the trainer does); float32 on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


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


def step_loss(model, batch: dict[str, torch.Tensor], arm: Arm, *, objective=None, teacher=None):
    """The loss of one training step of ``arm`` on ``batch`` (forward included).

    CE and cached arms run the trainer's own objective (``logitcache.train.objective``, the
    fused output layer + loss by default: no ``[N, V]`` logits); online KD runs the student's
    dense logits, the teacher's forward and the full-vocabulary KL, as an online trainer does.
    """
    with _autocast(batch["input_ids"].device):
        if arm.kind == "online":
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            return _online_loss(teacher, logits, batch)
        loss, _ = objective(batch)
    return loss


def make_objective(model, arm: Arm, *, vocab_size: int):
    """The trainer's objective for ``arm`` (None for online KD), with the default loss impl."""
    from logitcache.losses import LossConfig
    from logitcache.train.objective import StudentObjective

    if arm.kind == "online":
        return None
    return StudentObjective(model, LossConfig(kind=arm.kind), vocab_size=vocab_size)


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
    work_dir: Path | None = None,
    checkpoint_every: int = 16,
    num_workers: int = 0,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Train one arm from scratch (or from its checkpoint in ``work_dir``); return its curve,
    final metrics and timings, and save the final student to ``work_dir/student``.

    Every ``checkpoint_every`` steps the model, optimizer, scheduler, position and curve go to
    ``work_dir/checkpoint.pt`` (tensors and plain values only: ``weights_only`` loads it), so a
    killed run continues from there with the same batches. Past ``deadline``
    (``time.monotonic()``) the arm checkpoints and raises :class:`Interrupted`.
    """
    from logitcache.data import CacheDataset, make_dataloader
    from logitcache.train.checkpoint import load_checkpoint, save_checkpoint
    from logitcache.train.loop import lr_lambda
    from logitcache.train.student import preset_student

    if arm.kind == "online" and teacher is None:
        raise ValueError("online KD needs the teacher")
    ds = CacheDataset(cache_uri, split="all", shuffle=True, seed=seed)
    loader = make_dataloader(ds, batch_size=sched.batch_size, num_workers=num_workers)
    manifest = ds.manifest
    steps_per_epoch = math.ceil(ds.num_samples() / sched.batch_size)
    total = steps_per_epoch * sched.epochs
    eval_at = {round(total * (i + 1) / sched.evals) for i in range(sched.evals)}

    model = preset_student(student, manifest, seed=seed).to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = _optimizer(model, sched)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(sched.warmup, total, 0.1))
    objective = make_objective(model, arm, vocab_size=manifest.vocab_size)

    step = tokens = 0
    epoch_s = [0.0] * sched.epochs
    curve: list[dict] = []
    ckpt = work_dir / "checkpoint.pt" if work_dir is not None else None
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(str(work_dir))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["scheduler"])
        step, tokens = state["step"], state["tokens"]
        epoch_s, curve = list(state["epoch_s"]), json.loads(state["curve"])
        log.info("%s seed %d: resumed at step %d/%d", arm.name, seed, step, total)
    if not curve:
        curve = [{"step": 0, "tokens": 0, **evaluate(model, held, device=device)}]

    def save() -> None:
        if ckpt is None:
            return
        save_checkpoint(str(work_dir), {
            "step": step, "tokens": tokens, "epoch_s": epoch_s, "curve": json.dumps(curve),
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": lr_sched.state_dict(),
        })  # fmt: skip

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.train()
    for epoch in range(step // steps_per_epoch, sched.epochs):
        ds.set_epoch(epoch)
        skip = step - epoch * steps_per_epoch  # batches of this epoch already trained
        t0 = time.perf_counter()
        for i, batch in enumerate(loader):
            if i < skip:  # same shuffle, same order: replay the epoch up to the checkpoint
                t0 = time.perf_counter()
                continue
            batch = {key: v.to(device, non_blocking=True) for key, v in batch.items()}
            if arm.k is not None and arm.k < batch["topk_ids"].shape[-1]:
                batch = derive_topk(batch, arm.k)
            loss = step_loss(model, batch, arm, objective=objective, teacher=teacher)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            lr_sched.step()
            step += 1
            tokens += int((batch["labels"] != -100).sum())
            if step in eval_at or step % checkpoint_every == 0:
                sync()
                epoch_s[epoch] += time.perf_counter() - t0  # evaluation is not training time
                if step in eval_at:
                    curve.append(
                        {"step": step, "tokens": tokens, **evaluate(model, held, device=device)}
                    )
                    log.info("%s seed %d step %d/%d: %s", arm.name, seed, step, total, curve[-1])
                save()
                if deadline is not None and time.monotonic() > deadline:
                    raise Interrupted(f"{arm.name} seed {seed} stopped at step {step}/{total}")
                t0 = time.perf_counter()
        sync()
        epoch_s[epoch] += time.perf_counter() - t0
    save()
    if work_dir is not None:
        model.save_pretrained(str(work_dir / "student"), safe_serialization=True)
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


class Interrupted(RuntimeError):
    """A time-boxed run stopped at a checkpoint; the same command continues it."""


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
    a shared machine hits both alike; epoch wall times alone are too noisy there. Both steps
    use :func:`step_loss`, the same code as the training runs."""
    import statistics

    from logitcache.data import CacheDataset, make_dataloader
    from logitcache.train.student import preset_student

    ds = CacheDataset(cache_uri, split="all", shuffle=True, seed=0)
    manifest = ds.manifest
    models = {name: preset_student(student, manifest, seed=0).to(device) for name in ("c", "o")}
    opts = {name: _optimizer(m, Schedule()) for name, m in models.items()}
    arms = {"c": arm, "o": Arm(name="online_full_kd", kind="online")}
    objectives = {
        n: make_objective(m, arms[n], vocab_size=manifest.vocab_size) for n, m in models.items()
    }

    def step(name: str, batch: dict[str, torch.Tensor]) -> float:
        t0 = time.perf_counter()
        b = {key: v.to(device) for key, v in batch.items()}
        if name == "c" and arm.k is not None and arm.k < b["topk_ids"].shape[-1]:
            b = derive_topk(b, arm.k)
        loss = step_loss(models[name], b, arms[name], objective=objectives[name], teacher=teacher)
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
    if len(times["c"]) > 1:  # the first batch warms up allocators and kernels
        times = {name: t[1:] for name, t in times.items()}
    return {
        "cached_step_s": statistics.median(times["c"]),
        "online_step_s": statistics.median(times["o"]),
        "steps": len(times["c"]),
        "cached_arm": arm.name,
    }
