"""Distillation results: what a student gains from cached soft labels, and what it costs.

Teacher SmolLM2-135M-Instruct (real weights), a Llama student sharing its tokenizer, Python's
docs split into train / held-out documents. Arms (same init, batches, optimiser, schedule):
CE only, online full-vocabulary KD (teacher forward every step), cached top-k + tail at
k = 8 / 32 / 128, cached top-32 renormalised, cached RS-KD with 50 draws.

    python -m benchmarks.distill --quick          # tiny student, ~8k tokens: a few minutes
    python -m benchmarks.distill                  # 'small' student (17.3M), 32k tokens x 2 epochs, 2 seeds
    python -m benchmarks.distill --device cuda --train-tokens 1000000 --epochs 3 --batch-size 16

Artifacts (corpus split, caches, dense held-out teacher log-probs, finished arms) are kept
under ``.bench-cache/distill/`` so a re-run skips finished work (``--fresh`` redoes the arms).
The last stdout line is one JSON object with the figures and ``targets``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks._distill_data import (
    RS_SAMPLES,
    STORE_K,
    TEACHER,
    build,
    bytes_per_token,
    heldout_set,
    split_corpus,
)
from benchmarks._distill_train import ARMS, Schedule, paired_step_times, train_arm

log = logging.getLogger("benchmarks.distill")

ROOT = Path(os.environ.get("LOGITCACHE_BENCH_CACHE", ".bench-cache")) / "distill"
CLOSE_ARMS = {"online_full_kd", "topk32_tail", "topk128_tail", "rs50"}  # get extra seeds
PLOT = Path("docs/distill-results.png")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.distill", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="tiny student, 8k tokens, 1 seed")
    ap.add_argument(
        "--student", default=None, help="tiny | small (default small; tiny with --quick)"
    )
    ap.add_argument(
        "--train-tokens", type=int, default=None, help="unique train tokens (cache size)"
    )
    ap.add_argument("--heldout-tokens", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument(
        "--lr", type=float, default=None, help="peak lr (default 1e-2 tiny, 2e-3 small)"
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds for the close arms (default 2; 1 with --quick)",
    )
    ap.add_argument("--arms", default=",".join(a.name for a in ARMS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ray", action="store_true", help="capture on local Ray (default in-process)")
    ap.add_argument("--fresh", action="store_true", help="retrain arms even if results exist")
    ap.add_argument("--plot", default=str(PLOT))
    ap.add_argument(
        "--paired-steps", type=int, default=8,
        help="interleaved online/cached steps timed for the speedup (0 = use epoch times)",
    )  # fmt: skip
    ap.add_argument("--teacher", default=TEACHER, help="teacher for capture and online KD")
    ap.add_argument("--root", default=str(ROOT), help="artifact directory (re-runs reuse it)")
    args = ap.parse_args(argv)
    args.student = args.student or ("tiny" if args.quick else "small")
    args.train_tokens = args.train_tokens or (8192 if args.quick else 32768)
    args.heldout_tokens = args.heldout_tokens or (1024 if args.quick else 2048)
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.lr = args.lr or (1e-2 if args.student == "tiny" else 2e-3)
    return args


def _params(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-embedding) parameter counts; tied embeddings are counted once."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return total, total - emb


def _mean(runs: list[dict], key: str) -> float:
    return statistics.fmean(r["final"][key] for r in runs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = torch.device(args.device)
    load_start = os.getloadavg()
    t_start = time.perf_counter()

    root = Path(args.root)
    train_txt, held_txt = split_corpus(root / "corpus")
    tag = f"L{args.seq_len}-t{args.train_tokens}"
    train_uri = root / f"cache-train-{tag}-k{STORE_K}-rs{RS_SAMPLES}"
    held_uri = root / f"cache-heldout-L{args.seq_len}-t{args.heldout_tokens}"
    teacher_dev = "cuda" if device.type == "cuda" else "cpu"
    manifest, capture_s = build(
        train_txt, train_uri, max_tokens=args.train_tokens, seq_len=args.seq_len,
        top_k=STORE_K, rs_samples=RS_SAMPLES, device=teacher_dev, use_ray=args.ray, teacher=args.teacher,
    )  # fmt: skip
    build(
        held_txt, held_uri, max_tokens=args.heldout_tokens, seq_len=args.seq_len,
        top_k=1, rs_samples=0, device=teacher_dev, use_ray=args.ray, teacher=args.teacher,
    )  # fmt: skip

    wanted = [a for a in ARMS if a.name in args.arms.split(",")]
    teacher = None
    need_dense = not (held_uri / "teacher_dense_fp16.npy").exists()
    if need_dense or any(a.kind == "online" for a in wanted) or args.teacher != TEACHER:
        from logitcache.teachers import TeacherConfig, load_teacher

        teacher = load_teacher(TeacherConfig(teacher=args.teacher, device=teacher_dev))
    held = heldout_set(held_uri, teacher, device=teacher_dev)
    log.info(
        "held-out: %d target positions; train cache: %d tokens", held.tokens, manifest.num_tokens
    )

    sched = Schedule(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    run_dir = (
        root
        / "runs"
        / f"{args.student}-{tag}-e{args.epochs}-b{args.batch_size}-lr{args.lr}-{device.type}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    for arm in wanted:
        for seed in range(args.seeds if arm.name in CLOSE_ARMS else 1):
            path = run_dir / f"{arm.name}-s{seed}.json"
            if path.exists() and not args.fresh:
                result = json.loads(path.read_text())
            else:
                result = train_arm(
                    arm, cache_uri=str(train_uri), held=held, student=args.student, seed=seed,
                    sched=sched, device=device, teacher=teacher,
                )  # fmt: skip
                result["loadavg"] = os.getloadavg()
                path.write_text(json.dumps(result))
            runs.setdefault(arm.name, []).append(result)
            log.info(
                "%s seed %d: %s, epoch %s s", arm.name, seed, result["final"], result["epoch_s"]
            )

    # -- cost: bytes per token of each cached view, FLOP-ratio limit vs measured speedup
    sizes = {
        "topk8_tail": bytes_per_token(train_uri, k=8, rs=False),
        "topk32_tail": bytes_per_token(train_uri, k=32, rs=False),
        "topk32_renorm": None,
        "topk128_tail": bytes_per_token(train_uri, k=128, rs=False),
        "rs50": bytes_per_token(train_uri, k=0, rs=True),
    }
    sizes["topk32_renorm"] = sizes["topk32_tail"]  # same stored data, tail ignored by the loss
    from logitcache.train.student import preset_student

    s_total, s_nonemb = _params(preset_student(args.student, manifest, seed=0))
    if teacher is not None:
        t_total, t_nonemb = _params(teacher.model)
    else:  # SmolLM2-135M: tied 49152 x 576 embedding
        t_total, t_nonemb = 134_515_008, 134_515_008 - 49152 * 576
    limit_total = 1 + (2 * t_total) / (6 * s_total)
    limit_nonemb = 1 + (2 * t_nonemb) / (6 * s_nonemb)

    def epoch_time(name: str) -> float:
        return statistics.fmean(statistics.fmean(r["epoch_s"]) for r in runs[name])

    table = {}
    for name, rs in runs.items():
        table[name] = {
            "heldout_ce": _mean(rs, "ce"),
            "heldout_ce_seeds": [r["final"]["ce"] for r in rs],
            "kl_teacher_student": _mean(rs, "kl"),
            "top1_agreement": _mean(rs, "top1"),
            "ece": _mean(rs, "ece"),
            "mean_conf": _mean(rs, "mean_conf"),
            "accuracy": _mean(rs, "accuracy"),
            "bytes_per_token": sizes.get(name),
            "capture_s": capture_s if name in sizes else None,
            "epoch_s": epoch_time(name),
            "seeds": len(rs),
        }
    figures: dict = {
        "scale": {
            "student": args.student, "student_params": s_total, "student_nonemb_params": s_nonemb,
            "teacher_params": t_total, "teacher_nonemb_params": t_nonemb,
            "train_tokens_unique": manifest.num_tokens, "epochs": args.epochs,
            "heldout_tokens": held.tokens, "seq_len": args.seq_len, "batch_size": args.batch_size,
            "device": str(device), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
            "wall_s": time.perf_counter() - t_start, "capture_s": capture_s,
        },
        "arms": table,
        "bytes_per_token": sizes,
        "limit_total_params": limit_total,
        "limit_nonemb_params": limit_nonemb,
    }  # fmt: skip
    targets = {}
    cached = [n for n in table if n in sizes]
    if "online_full_kd" in table and cached:
        online = table["online_full_kd"]
        best = min(cached, key=lambda n: table[n]["heldout_ce"])
        speedup = online["epoch_s"] / table[best]["epoch_s"]
        ce_gap = (table[best]["heldout_ce"] - online["heldout_ce"]) / online["heldout_ce"]
        kl_gap = (table[best]["kl_teacher_student"] - online["kl_teacher_student"]) / max(
            online["kl_teacher_student"], 1e-9
        )
        figures.update(best_cached_arm=best, epoch_speedup=speedup)
        if args.paired_steps and teacher is not None:
            arm = next(a for a in ARMS if a.name == best)
            paired = paired_step_times(
                arm, cache_uri=str(train_uri), student=args.student, teacher=teacher,
                batch_size=args.batch_size, device=device, steps=args.paired_steps,
            )  # fmt: skip
            figures["paired_timing"] = paired
            speedup = paired["online_step_s"] / paired["cached_step_s"]
        figures["measured_speedup"] = speedup
        for n in cached:
            table[n]["speedup_vs_online"] = online["epoch_s"] / table[n]["epoch_s"]
        targets = {
            "speedup_vs_limit": {"value": speedup / limit_total, "target": 0.9, "op": ">=", "unit": "ratio"},
            "best_cached_ce_gap_vs_online": {"value": 100 * ce_gap, "target": 1.0, "op": "<=", "unit": "%"},
            "cached_vs_online_heldout_kl_gap": {"value": 100 * kl_gap, "target": 1.0, "op": "<=", "unit": "%"},
        }  # fmt: skip
    figures["targets"] = targets
    _plot(runs, Path(args.plot), figures["scale"])
    log.info("results table:\n%s", markdown_table(figures))
    print(json.dumps(figures))
    return figures


def markdown_table(figures: dict) -> str:
    """The per-arm table of docs/benchmarks.md, from the JSON figures."""

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [
        "| arm | seeds | held-out CE | KL(teacher‖student) | top-1 agree | ECE | bytes/token "
        "| capture s | s / epoch | speedup vs online |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in figures["arms"].items():
        ce = " / ".join(format(c, ".3f") for c in r["heldout_ce_seeds"])
        lines.append(
            f"| {name} | {r['seeds']} | {ce} | {r['kl_teacher_student']:.3f} "
            f"| {r['top1_agreement']:.3f} | {r['ece']:.3f} | {f(r['bytes_per_token'], '.1f')} "
            f"| {f(r['capture_s'], '.0f')} | {r['epoch_s']:.1f} "
            f"| {f(r.get('speedup_vs_online'), '.2f')} |"
        )
    return "\n".join(lines)


def _plot(runs: dict[str, list[dict]], path: Path, scale: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rs in runs.items():
        curve = rs[0]["curve"]
        x = [p["tokens"] for p in curve]
        for ax, key in zip(axes, ("ce", "kl")):
            y = [statistics.fmean(r["curve"][i][key] for r in rs) for i in range(len(curve))]
            ax.plot(x, y, marker="o", ms=3, label=f"{name} ({len(rs)} seed{'s' * (len(rs) > 1)})")
    axes[0].set(
        xlabel="training tokens", ylabel="held-out CE (nats)", title="cross-entropy on true tokens"
    )
    axes[1].set(
        xlabel="training tokens", ylabel="KL(teacher || student) (nats)", title="full-vocabulary KL"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_yscale("log")
    axes[1].legend(fontsize=7)
    fig.suptitle(
        f"SmolLM2-135M -> {scale['student']} student ({scale['student_params'] / 1e6:.1f}M), "
        f"{scale['train_tokens_unique']} tokens x {scale['epochs']} epochs, {scale['device']}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
