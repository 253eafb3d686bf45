"""Distillation results: what a student gains from cached soft labels, what it costs, and
how good a speculative-decoding draft model it makes.

Teacher SmolLM2-135M-Instruct (real weights), a Llama student sharing its tokenizer, Python's
docs (and, at larger scales, the standard library's docstrings or source) split into train /
held-out documents. Arms (same init, batches, optimiser, schedule): CE only, online
full-vocabulary KD (teacher forward every step), cached top-k + tail at k = 8 / 32 / 128,
cached top-32 renormalised, cached RS-KD with 50 draws; a unigram baseline beside them.

    python -m benchmarks.distill --quick             # tiny student, 8k tokens: minutes
    python -m benchmarks.distill --scale small       # the plumbing setting (default)
    python -m benchmarks.distill --scale medium      # idle 2-core CPU, ~90 min (resumable)
    python -m benchmarks.distill --scale gpu --device cuda      # one H200, ~8 min
    python -m benchmarks.distill --scale gpu --dry-size tiny    # the gpu code path in seconds

Artifacts (corpus split, caches, dense held-out teacher log-probs, per-arm checkpoints and
results, students) are kept under ``.bench-cache/distill/``: a killed run continues where it
stopped when the same command is run again (``--fresh`` redoes the arms;
``--stop-after-minutes M`` stops cleanly at the next checkpoint after M minutes). The last
stdout line is one JSON object with the figures and ``targets``, also written to
``benchmarks/results/distill-<scale>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import replace
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
from benchmarks._distill_scales import SCALES, Scale, dry, flop_estimate
from benchmarks._distill_train import (
    ARMS,
    GAMMA,
    Interrupted,
    Schedule,
    alpha_bound_check,
    evaluate,
    paired_step_times,
    train_arm,
    unigram_baseline,
)

log = logging.getLogger("benchmarks.distill")

ROOT = Path(os.environ.get("LOGITCACHE_BENCH_CACHE", ".bench-cache")) / "distill"
RESULTS = Path("benchmarks/results")
CLOSE = 0.01  # arms within 1% held-out CE of another arm get the extra seeds


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.distill", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument(
        "--dry-size", choices=["tiny"], default=None,
        help="shrink the scale to seconds, keeping its code path (corpus, epochs rule, seeds)",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="small scale, tiny student, 8k tokens")
    ap.add_argument("--student", default=None, help="override the scale's student preset")
    ap.add_argument("--train-tokens", type=int, default=None, help="unique train tokens")
    ap.add_argument("--heldout-tokens", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate")
    ap.add_argument("--seeds", type=int, default=None, help="seeds for the arms within 1%%")
    ap.add_argument(
        "--prompts", type=int, default=None, help="assisted-generation prompts (0: off)"
    )
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens generated per prompt")
    ap.add_argument("--arms", default=",".join(a.name for a in ARMS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ray", action="store_true", help="capture on local Ray (default in-process)")
    ap.add_argument("--fresh", action="store_true", help="retrain arms even if results exist")
    ap.add_argument("--plot", default=None, help="default docs/distill-<scale>.png")
    ap.add_argument(
        "--results", default=None, help="default benchmarks/results/distill-<scale>.json"
    )
    ap.add_argument(
        "--paired-steps", type=int, default=None,
        help="interleaved online/cached steps timed for the speedup (0 = use epoch times)",
    )  # fmt: skip
    ap.add_argument("--stop-after-minutes", type=float, default=None)
    ap.add_argument("--teacher", default=TEACHER, help="teacher for capture and online KD")
    ap.add_argument("--root", default=str(ROOT), help="artifact directory (re-runs reuse it)")
    return ap.parse_args(argv)


def resolve_scale(args: argparse.Namespace) -> Scale:
    """The scale named by the flags, with ``--dry-size``, ``--quick`` and overrides applied."""
    scale = SCALES[args.scale]
    if args.quick:
        scale = replace(
            scale, name=f"{scale.name}-quick", student="tiny", train_tokens=8192,
            heldout_tokens=1024, seeds=1, lr=1e-2, prompts=4,
        )  # fmt: skip
    if args.dry_size:
        scale = dry(scale, args.dry_size)
    overrides = {
        "student": args.student, "train_tokens": args.train_tokens,
        "heldout_tokens": args.heldout_tokens, "seq_len": args.seq_len, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "seeds": args.seeds,
        "prompts": args.prompts, "paired_steps": args.paired_steps, "new_tokens": args.new_tokens,
    }  # fmt: skip
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("seq_len") is not None and overrides["seq_len"] <= scale.prompt_len:
        overrides["prompt_len"] = max(4, overrides["seq_len"] // 4)
    return replace(scale, **overrides) if overrides else scale


def _params(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-embedding) parameter counts; tied embeddings are counted once."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return total, total - emb


def _mean(runs: list[dict], key: str) -> float:
    return statistics.fmean(r["final"][key] for r in runs)


def close_arms(first: dict[str, float], tol: float = CLOSE) -> set[str]:
    """Arms whose seed-0 held-out CE is within ``tol`` (relative) of another arm's."""
    return {
        a
        for a, ca in first.items()
        for b, cb in first.items()
        if a != b and abs(ca - cb) <= tol * min(ca, cb)
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message).200s")
    scale = resolve_scale(args)
    device = torch.device(args.device)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    minutes = args.stop_after_minutes
    deadline = time.monotonic() + 60 * minutes if minutes is not None else None
    try:
        figures = _run(args, scale, device, deadline)
    except Interrupted as exc:
        log.warning("%s; run the same command again to continue", exc)
        figures = {"interrupted": str(exc), "scale": {"name": scale.name}, "targets": {}}
        print(json.dumps(figures))
        return figures
    figures["scale"].update(
        loadavg_start=load_start, loadavg_end=os.getloadavg(),
        wall_s_this_invocation=time.perf_counter() - t_start,
    )  # fmt: skip
    results = Path(args.results or RESULTS / f"distill-{scale.name}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(figures, indent=1) + "\n")
    log.info("results table:\n%s", markdown_table(figures))
    print(json.dumps(figures))
    return figures


def _run(args, scale: Scale, device: torch.device, deadline: float | None) -> dict:
    root = Path(args.root)
    corpus_dir = root / ("corpus" if scale.corpus == "pydoc" else f"corpus-{scale.corpus}")
    train_txt, held_txt = split_corpus(corpus_dir, scale.corpus)
    prefix = "" if scale.corpus == "pydoc" else f"{scale.corpus.replace('+', '-')}-"
    tag = f"{prefix}L{scale.seq_len}-t{scale.train_tokens}"
    train_uri = root / f"cache-train-{tag}-k{STORE_K}-rs{RS_SAMPLES}"
    held_uri = root / f"cache-heldout-{prefix}L{scale.seq_len}-t{scale.heldout_tokens}"
    teacher_dev = "cuda" if device.type == "cuda" else "cpu"
    manifest, capture_s = build(
        train_txt, train_uri, max_tokens=scale.train_tokens, seq_len=scale.seq_len,
        top_k=STORE_K, rs_samples=RS_SAMPLES, device=teacher_dev, use_ray=args.ray, teacher=args.teacher,
    )  # fmt: skip
    build(
        held_txt, held_uri, max_tokens=scale.heldout_tokens, seq_len=scale.seq_len,
        top_k=1, rs_samples=0, device=teacher_dev, use_ray=args.ray, teacher=args.teacher,
    )  # fmt: skip
    epochs = scale.epochs_for(manifest.num_tokens)

    from logitcache.teachers import TeacherConfig, load_teacher

    wanted = [a for a in ARMS if a.name in args.arms.split(",")]
    # the teacher is needed for online KD, the dense held-out set, timing and generation
    teacher = load_teacher(TeacherConfig(teacher=args.teacher, device=teacher_dev))
    held = heldout_set(held_uri, teacher, device=teacher_dev)
    log.info(
        "held-out: %d target positions; train cache: %d unique tokens x %d epochs",
        held.tokens, manifest.num_tokens, epochs,
    )  # fmt: skip

    sched = Schedule(
        epochs=epochs, batch_size=scale.batch_size, lr=scale.lr, warmup=scale.warmup,
        evals=scale.evals,
    )  # fmt: skip
    run_dir = (
        root / "runs"
        / f"{scale.student}-{tag}-e{epochs}-b{scale.batch_size}-lr{scale.lr}-{device.type}"
    )  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}

    def run(arm, seed: int) -> dict:
        path = run_dir / f"{arm.name}-s{seed}.json"
        if path.exists() and not args.fresh:
            return json.loads(path.read_text())
        work = run_dir / f"{arm.name}-s{seed}"
        if args.fresh and (work / "checkpoint.pt").exists():
            (work / "checkpoint.pt").unlink()
        work.mkdir(exist_ok=True)
        result = train_arm(
            arm, cache_uri=str(train_uri), held=held, student=scale.student, seed=seed,
            sched=sched, device=device, teacher=teacher, work_dir=work,
            checkpoint_every=scale.checkpoint_every, num_workers=scale.num_workers,
            deadline=deadline,
        )  # fmt: skip
        result["loadavg"] = os.getloadavg()
        path.write_text(json.dumps(result))
        log.info("%s seed %d: %s, epoch %s s", arm.name, seed, result["final"], result["epoch_s"])
        return result

    for arm in wanted:  # seed 0 of every arm, then more seeds for the arms too close to call
        runs[arm.name] = [run(arm, 0)]
    close = close_arms({name: rs[0]["final"]["ce"] for name, rs in runs.items()})
    for arm in wanted:
        if arm.name in close:
            runs[arm.name] += [run(arm, seed) for seed in range(1, scale.seeds)]

    unigram = unigram_baseline(str(train_uri), held, device=device)
    figures = _report(
        args,
        scale,
        device,
        runs,
        manifest,
        capture_s,
        train_uri,
        held,
        teacher,
        run_dir,
        epochs,
        unigram,
    )
    figures["close_arms"] = sorted(close)
    _plot(runs, Path(args.plot or f"docs/distill-{scale.name}.png"), figures["scale"], unigram)
    return figures


def _draft_figures(scale, device, runs, held, teacher, run_dir, best: str) -> dict:
    """Assisted generation for every arm's seed-0 student, and the int8 copy of ``best``."""
    from transformers import AutoModelForCausalLM

    from benchmarks._distill_draft import (
        assisted,
        prompts_from_heldout,
        quantize_int8,
        state_bytes,
        teacher_alone,
    )

    out: dict = {"gamma": GAMMA}
    students = {name: run_dir / f"{name}-s0" / "student" for name in runs}
    prompts = prompts_from_heldout(held, count=scale.prompts, length=scale.prompt_len)
    if scale.prompts and prompts and teacher is not None:
        cached = run_dir / f"draft-teacher-P{len(prompts)}-n{scale.new_tokens}.json"
        if cached.exists():
            ref = json.loads(cached.read_text())
            ref["outputs"] = [torch.tensor(o) for o in ref["outputs"]]
        else:
            ref = teacher_alone(teacher.model, prompts, new_tokens=scale.new_tokens)
            cached.write_text(json.dumps({**ref, "outputs": [o.tolist() for o in ref["outputs"]]}))
        out["teacher_alone_s"] = sum(ref["seconds"])
        out["prompts"], out["prompt_len"], out["new_tokens"] = (
            len(prompts),
            scale.prompt_len,
            scale.new_tokens,
        )
        measured = {}
        for name, path in students.items():
            done = run_dir / f"draft-{name}-P{len(prompts)}-n{scale.new_tokens}.json"
            if done.exists():
                measured[name] = json.loads(done.read_text())
                continue
            student = AutoModelForCausalLM.from_pretrained(str(path))
            measured[name] = assisted(
                teacher.model, student, prompts, ref, new_tokens=scale.new_tokens, gamma=GAMMA
            )
            measured[name]["loadavg"] = os.getloadavg()
            done.write_text(json.dumps(measured[name]))
            log.info("assisted generation, %s drafting: %s", name, measured[name])
        out["assisted"] = measured
    # distill-then-quantize: the best student in float and in int8, both evaluated on the CPU
    float_student = AutoModelForCausalLM.from_pretrained(str(students[best]))
    rows = None if device.type == "cpu" else 16  # CPU evaluation of a GPU run: a subset
    done = run_dir / f"draft-quantized-{best}-P{len(prompts)}-n{scale.new_tokens}.json"
    if done.exists():
        quant = json.loads(done.read_text())
    else:
        q_student = quantize_int8(float_student)
        cpu = torch.device("cpu")
        quant = {
            "arm": best,
            "tool": "torch.ao.quantization.quantize_dynamic(nn.Linear, qint8)",
            "heldout_rows": rows or int(held.input_ids.shape[0]),
            "float": evaluate(float_student, held, device=cpu, rows=rows),
            "int8": evaluate(q_student, held, device=cpu, rows=rows),
            "float_bytes": state_bytes(float_student),
            "int8_bytes": state_bytes(q_student),
        }
        if scale.prompts and prompts and teacher is not None and device.type == "cpu":
            quant["assisted_int8"] = assisted(
                teacher.model, q_student, prompts, ref, new_tokens=scale.new_tokens, gamma=GAMMA
            )
        done.write_text(json.dumps(quant))
    out["quantized"] = quant
    out["alpha_bounds_best"] = alpha_bound_check(
        float_student.to(device), held, ks=(8, 32, 128), device=device, rows=rows
    )
    return out


def _report(
    args,
    scale,
    device,
    runs,
    manifest,
    capture_s,
    train_uri,
    held,
    teacher,
    run_dir,
    epochs,
    unigram,
) -> dict:
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

    s_total, s_nonemb = _params(preset_student(scale.student, manifest, seed=0))
    t_total, t_nonemb = _params(teacher.model)
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
            "alpha": _mean(rs, "alpha"),
            "tokens_per_round_g4": _mean(rs, "tokens_per_round_g4"),
            "bytes_per_token": sizes.get(name),
            "capture_s": capture_s if name in sizes else None,
            "epoch_s": epoch_time(name),
            "seeds": len(rs),
        }
    n_runs = sum(len(rs) for rs in runs.values())
    figures: dict = {
        "scale": {
            "name": scale.name, "corpus": scale.corpus, "student": scale.student,
            "student_params": s_total, "student_nonemb_params": s_nonemb,
            "teacher_params": t_total, "teacher_nonemb_params": t_nonemb,
            "train_tokens_unique": manifest.num_tokens, "epochs": epochs,
            "steps_per_run": runs[next(iter(runs))][0]["steps"],
            "train_tokens_per_run": runs[next(iter(runs))][0]["train_tokens"],
            "heldout_tokens": held.tokens, "seq_len": scale.seq_len, "batch_size": scale.batch_size,
            "lr": scale.lr, "device": str(device), "capture_s": capture_s, "runs": n_runs,
            "python": sys.version.split()[0], "torch": torch.__version__,
        },
        "arms": table,
        "unigram": unigram,
        "bytes_per_token": sizes,
        "limit_total_params": limit_total,
        "limit_nonemb_params": limit_nonemb,
        "flop_estimate": flop_estimate(
            scale, unique_tokens=manifest.num_tokens, student_params=s_total,
            teacher_params=t_total, runs=n_runs,
        ),
        "training_s_all_runs": sum(sum(r["epoch_s"]) for rs in runs.values() for r in rs),
    }  # fmt: skip
    best = min(table, key=lambda n: table[n]["heldout_ce"])
    figures["best_arm"] = best
    figures["draft"] = _draft_figures(scale, device, runs, held, teacher, run_dir, best)
    for name, m in figures["draft"].get("assisted", {}).items():
        table[name]["assisted_tokens_per_round"] = m["tokens_per_round"]
        table[name]["assisted_speedup"] = m["speedup"]
    targets = {}
    cached = [n for n in table if n in sizes]
    if "online_full_kd" in table and cached:
        online = table["online_full_kd"]
        best_cached = min(cached, key=lambda n: table[n]["heldout_ce"])
        speedup = online["epoch_s"] / table[best_cached]["epoch_s"]
        ce_gap = (table[best_cached]["heldout_ce"] - online["heldout_ce"]) / online["heldout_ce"]
        kl_gap = (table[best_cached]["kl_teacher_student"] - online["kl_teacher_student"]) / max(
            online["kl_teacher_student"], 1e-9
        )
        figures.update(best_cached_arm=best_cached, epoch_speedup=speedup)
        if scale.paired_steps:
            arm = next(a for a in ARMS if a.name == best_cached)
            paired = paired_step_times(
                arm, cache_uri=str(train_uri), student=scale.student, teacher=teacher,
                batch_size=scale.batch_size, device=device, steps=scale.paired_steps,
            )  # fmt: skip
            paired["loadavg"] = os.getloadavg()
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
    if scale.name.split("-")[0] == "medium":
        targets["train_tokens_unique"] = {
            "value": manifest.num_tokens,
            "target": 250_000,
            "op": ">=",
            "unit": "tokens",
        }
        targets["optimiser_steps"] = {
            "value": figures["scale"]["steps_per_run"],
            "target": 250,
            "op": ">=",
            "unit": "steps",
        }
    if scale.name.split("-")[0] == "gpu":
        targets["train_tokens_per_run"] = {
            "value": figures["scale"]["train_tokens_per_run"],
            "target": 20_000_000,
            "op": ">=",
            "unit": "tokens",
        }
    figures["targets"] = targets
    return figures


def markdown_table(figures: dict) -> str:
    """The per-arm table of docs/benchmarks.md, from the JSON figures."""

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [
        "| arm | seeds | held-out CE | KL(teacher‖student) | top-1 agree | ECE | alpha "
        "| E[tokens/round], γ=4 | measured tokens/round | speedup (assisted) | bytes/token "
        "| s / epoch | speedup vs online |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    u = figures.get("unigram")
    if u:
        lines.append(
            f"| unigram (no training) | - | {u['ce']:.3f} | {u['kl']:.3f} | {u['top1']:.3f} "
            f"| {u['ece']:.3f} | {u['alpha']:.3f} | {u['tokens_per_round_g4']:.2f} "
            "| - | - | - | - | - |"
        )
    for name, r in figures["arms"].items():
        ce = " / ".join(format(c, ".3f") for c in r["heldout_ce_seeds"])
        lines.append(
            f"| {name} | {r['seeds']} | {ce} | {r['kl_teacher_student']:.3f} "
            f"| {r['top1_agreement']:.3f} | {r['ece']:.3f} | {r['alpha']:.3f} "
            f"| {r['tokens_per_round_g4']:.2f} | {f(r.get('assisted_tokens_per_round'), '.2f')} "
            f"| {f(r.get('assisted_speedup'), '.2f')} | {f(r['bytes_per_token'], '.1f')} "
            f"| {r['epoch_s']:.1f} | {f(r.get('speedup_vs_online'), '.2f')} |"
        )
    q = figures.get("draft", {}).get("quantized")
    if q:
        for kind in ("float", "int8"):
            m = q[kind]
            a = q.get("assisted_int8") if kind == "int8" else None
            lines.append(
                f"| {q['arm']} seed 0, {kind} ({q[kind + '_bytes'] / 1e6:.1f} MB) | 1 "
                f"| {m['ce']:.3f} | {m['kl']:.3f} | {m['top1']:.3f} | {m['ece']:.3f} "
                f"| {m['alpha']:.3f} | {m['tokens_per_round_g4']:.2f} "
                f"| {f(a and a['tokens_per_round'], '.2f')} | {f(a and a['speedup'], '.2f')} "
                "| - | - | - |"
            )
    return "\n".join(lines)


def _plot(
    runs: dict[str, list[dict]], path: Path, scale: dict, unigram: dict | None = None
) -> None:
    """Held-out CE, KL and acceptance alpha against training tokens, every arm (seed mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("ce", "held-out CE (nats)", "cross-entropy on true tokens", True),
        ("kl", "KL(teacher || student) (nats)", "full-vocabulary KL", True),
        ("alpha", "alpha = E[sum min(p, q)]", "speculative acceptance", False),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.4))
    for name, rs in runs.items():
        curve = rs[0]["curve"]
        x = [p["tokens"] for p in curve]
        for ax, (key, *_rest) in zip(axes, panels):
            if any(key not in r["curve"][i] for r in rs for i in range(len(curve))):
                continue
            y = [statistics.fmean(r["curve"][i][key] for r in rs) for i in range(len(curve))]
            ax.plot(x, y, marker="o", ms=3, label=f"{name} ({len(rs)} seed{'s' * (len(rs) > 1)})")
    for ax, (key, ylabel, title, log_y) in zip(axes, panels):
        if unigram and key in unigram:
            ax.axhline(unigram[key], color="grey", ls="--", lw=1, label="unigram baseline")
        ax.set(xlabel="training tokens", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        if log_y:
            ax.set_yscale("log")
    axes[-1].legend(fontsize=7)
    fig.suptitle(
        f"SmolLM2-135M -> {scale['student']} student ({scale['student_params'] / 1e6:.1f}M), "
        f"{scale['train_tokens_unique']} unique tokens x {scale['epochs']} epochs "
        f"({scale['name']}, {scale['device']})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
