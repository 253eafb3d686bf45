"""Capture throughput: the build against the teacher's bare forward, same teacher/device/tokens.

    python -m benchmarks.capture [--quick] [--tokens 40960] [--device cpu|cuda] [--no-ray]
    python -m benchmarks.capture --sweep           # batch sizes timed, unit size chosen
    .venv-vllm/bin/python -m benchmarks.capture --backend vllm   # vLLM beside transformers

1. Plan the rows once (pydoc topics paragraphs, ``--seq-len`` windows, ``--tokens`` cap).
2. Bare forward: the transformers teacher's ``bare_forward(chunked_head=True)`` (backbone, then
   the output layer in the scorer's position chunks, nothing else) over exactly the batches the
   build forms, after a warm-up batch; before and after the build, pooled, so a change of
   machine load biases neither side.
3. The build (local Ray, one teacher actor, encode tasks beside it), reported two ways:
   **steady state** = the tokens of units 2..n over the time from the end of unit 1's scoring
   to the end of unit n's, from the actor's own per-unit score intervals
   (``logitcache/capture/timing.py``; the first unit carries the warm-up), so it can never
   exceed what the actor scored; and **end to end** (Ray start, teacher load, codec
   calibration, the first unit and the last unit's encode included). The target uses the
   steady state, over >= 30,000 tokens (a warning says when the window is shorter).
4. Post-processing cost at k = 8, 64, 128: ``Teacher.score`` against the bare forward on the
   same rows (in-process), so the k-dependence of the top-k/tail computation is visible.

``--backend vllm`` (run from ``.venv-vllm``, `make vllm`): the same rows through vLLM's
``prompt_logprobs`` at k = 8, 64, 128 beside vLLM's own prefill without log-probs (its bare
forward) and the transformers teacher on the same CPU. vLLM's CPU build reserves one core for
itself; its engine thread count is reported.

``--sweep``: the actor's per-unit work (unpack, score, pack) timed in-process for each
``--sweep-batches`` size over the same rows, walked forward then backward; the unit size is
chosen from the measured per-unit fixed cost (:func:`pick_unit_tokens`). About 6 minutes on
the idle 2-core CPU at the defaults; docs/capture.md says how the defaults were chosen.

Target (../shared/DESIGN.md): steady-state build >= 0.90 x bare on CPU, >= 0.95 x on a GPU. The
last stdout line is one JSON object with the figures and ``targets``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import tempfile
import time

log = logging.getLogger("benchmarks.capture")
TOP_KS = (8, 64, 128)
MIN_STEADY_TOKENS = 30_000  # the floor for the steady-state window
UNIT_OVERHEAD_SHARE = 0.01  # a unit's fixed cost may take this share of its scoring time


def _write_corpus(path: str) -> None:
    """pydoc topics split at blank lines: short documents, so units hold ~--unit-tokens each."""
    from pydoc_data.topics import topics

    with open(path, "w") as fh:
        for key in sorted(topics):
            for para in topics[key].split("\n\n"):
                if para.strip():
                    fh.write(json.dumps({"text": para.strip()}) + "\n")


def _batches(units, batch_tokens: int) -> list[list]:
    from logitcache.capture.stages import token_batches

    batches = []
    for unit in units:
        rows = [r.input_ids for r in unit.rows]
        batches += [
            [rows[i] for i in idx] for idx in token_batches([len(r) for r in rows], batch_tokens)
        ]
    return batches


def _rate(fn, batches) -> dict:
    t0 = time.perf_counter()
    tokens = sum(fn(b) for b in batches)
    elapsed = time.perf_counter() - t0
    return {
        "tokens": tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 1),
    }


def bare_forward(teacher, batches, chunked_head: bool = True) -> dict:
    """Tokens/s of the teacher's forward alone over the build's own batches."""
    return _rate(lambda b: teacher.bare_forward(b, chunked_head=chunked_head), batches)


def score_rate(teacher, batches, top_k: int) -> dict:
    """Tokens/s of ``Teacher.score`` (forward + on-device top-k/tail) at ``top_k``."""

    def run(b):
        teacher.score(b, top_k=top_k, seeds=[0] * len(b))
        return sum(len(r) for r in b)

    return _rate(run, batches)


def steady_state(manifest) -> dict:
    """The build's steady state: each teacher worker's units after its first, over the time
    from the first unit's scoring end to the last unit's (``capture/timing.py``)."""
    return dict(manifest.stats["run"]["steady"])


def bare_rate(before: dict, after: dict) -> float:
    """The bare forward's rate, pooled over its runs before and after the build."""
    return (before["tokens"] + after["tokens"]) / (before["seconds"] + after["seconds"])


def build_ratios(steady: dict, before: dict, after: dict, *, device: str) -> dict:
    """The steady-state build against the bare forward: pooled (the target), and against each
    of the two bare runs (their spread is the drift of the machine over the run)."""
    rate = steady.get("tokens_per_s")
    pooled = bare_rate(before, after)
    target = 0.95 if device.startswith("cuda") else 0.90
    return {
        "vs_pooled": round(rate / pooled, 3) if rate else None,
        "vs_before_after": [
            round(rate / b["tokens_per_s"], 3) if rate else None for b in (before, after)
        ],
        "window_ok": steady.get("tokens", 0) >= MIN_STEADY_TOKENS,
        "target": target,
    }


def _plan(args, tmp, device):
    from logitcache.capture import CaptureConfig
    from logitcache.capture.options import (
        LabelOptions,
        OutputOptions,
        PackingOptions,
        RunOptions,
        TeacherOptions,
    )
    from logitcache.capture.plan import plan_build
    from logitcache.teachers import load_tokenizer

    corpus = os.path.join(tmp, "pydoc.jsonl")
    _write_corpus(corpus)
    cfg = CaptureConfig(
        teacher=TeacherOptions(model=args.teacher, device=device, dtype="float32"),
        labels=LabelOptions(top_k=args.top_k),
        corpus=[corpus],
        packing=PackingOptions(
            seq_len=args.seq_len, max_tokens=args.tokens, unit_tokens=args.unit_tokens
        ),
        run=RunOptions(batch_tokens=args.batch_tokens, use_ray=not args.no_ray, progress="log"),
        output=OutputOptions(out=os.path.join(tmp, "cache")),
    )
    plan = plan_build(cfg, load_tokenizer(cfg.teacher_config()))
    return cfg, plan


def run_build(args, device: str) -> dict:
    from logitcache.capture import build_cache
    from logitcache.teachers import load_teacher

    with tempfile.TemporaryDirectory() as tmp:
        cfg, plan = _plan(args, tmp, device)
        teacher = load_teacher(cfg.teacher_config())
        batches = _batches(plan.units, cfg.run.batch_tokens)
        teacher.bare_forward(batches[0], chunked_head=True)  # warm-up
        before = bare_forward(teacher, batches)
        log.info("bare forward (before the build): %s", before)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        manifest = build_cache(cfg)
        wall = time.perf_counter() - t0
        after = bare_forward(teacher, batches)
        log.info("bare forward (after the build): %s", after)
        sample = batches[: max(1, len(batches) // 4)]
        plain = bare_forward(teacher, sample, chunked_head=False)
        ks = {str(k): score_rate(teacher, sample, k) for k in TOP_KS}
        bare_k = bare_forward(teacher, sample)
    bare = bare_rate(before, after)
    steady = steady_state(manifest)
    ratios = build_ratios(steady, before, after, device=device)
    if not ratios["window_ok"]:
        log.warning(
            "the steady-state window holds %d tokens (< %d): raise --tokens or lower "
            "--unit-tokens before quoting the target",
            steady["tokens"],
            MIN_STEADY_TOKENS,
        )
    run = manifest.stats["run"]
    return {
        "benchmark": "capture",
        "teacher": args.teacher,
        "device": device,
        "ray": not args.no_ray,
        "torch_threads": _torch_threads(),
        "tokens": manifest.num_tokens,
        "seq_len": args.seq_len,
        "top_k": args.top_k,
        "unit_tokens": args.unit_tokens,
        "batch_tokens": args.batch_tokens,
        "units": len(manifest.shards),
        "bare_tokens_per_s": round(bare, 1),
        "bare_tokens_per_s_before_after": [before["tokens_per_s"], after["tokens_per_s"]],
        "plain_logits_forward_tokens_per_s": plain["tokens_per_s"],
        "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "build_steady": steady,
        "build_steady_tokens": steady["tokens"],
        "build_steady_tokens_per_s": steady["tokens_per_s"],
        "build_steady_vs_bare_before_after": ratios["vs_before_after"],
        "build_steady_window_ok": ratios["window_ok"],
        "build_drain_s": run.get("drain_s"),
        # The actor's wait between units in the window (Ray dispatch, back-pressure): the
        # sweep's --unit-overhead-s.
        "build_steady_idle_s_per_unit": (
            round((steady["seconds"] - steady["scored_s"]) / steady["units"], 4)
            if steady["units"]
            else None
        ),
        "build_pipeline_tokens_per_s": run["pipeline_tokens_per_s"],
        "build_end_to_end_tokens_per_s": round(manifest.num_tokens / wall, 1),
        "build_wall_s": round(wall, 2),
        "build_first_commit_s": run.get("first_commit_s"),
        "teacher_actor_tokens_per_s": [
            w["tokens_per_s"] for w in manifest.stats["workers"].values()
        ],
        "score_vs_bare_by_k": {
            k: round(v["tokens_per_s"] / bare_k["tokens_per_s"], 3) for k, v in ks.items()
        },
        "score_tokens_per_s_by_k": {k: v["tokens_per_s"] for k, v in ks.items()},
        "bytes_per_token": manifest.stats.get("bytes_per_token"),
        "codec": manifest.codec["spec"].split(",ranks=")[0],
        "targets": {
            "build_vs_bare_forward": {
                "value": ratios["vs_pooled"],
                "target": ratios["target"],
                "op": ">=",
                "unit": "x bare forward tokens/s (steady state: units 2..n by score intervals)",
            }
        },
    }


def run_vllm(args) -> dict:
    """vLLM's prompt_logprobs at k = 8, 64, 128 beside its own prefill and transformers."""
    import vllm

    from logitcache.teachers import load_teacher
    from logitcache.teachers.vllm_convert import request_to_payload

    with tempfile.TemporaryDirectory() as tmp:
        cfg, plan = _plan(args, tmp, "cpu")
        batches = _batches(plan.units, cfg.run.batch_tokens)
        hf = load_teacher(cfg.teacher_config())
        hf.bare_forward(batches[0][:1], chunked_head=True)  # warm-up: one row
        hf_bare = bare_forward(hf, batches)
        hf_k = {str(k): score_rate(hf, batches, k) for k in TOP_KS}
        del hf
        vt = load_teacher(dataclasses.replace(cfg.teacher_config(), backend="vllm"))
        llm = vt._engine(max(TOP_KS))

        def prompts(rows):
            return [{"prompt_token_ids": [int(t) for t in r]} for r in rows]

        def prefill(rows):
            params = vllm.SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)
            llm.generate(prompts(rows), params, use_tqdm=False)
            return sum(len(r) for r in rows)

        def logprobs(rows, k):
            params = vllm.SamplingParams(
                prompt_logprobs=k, logprobs=k, max_tokens=1, temperature=0.0,
                detokenize=False, flat_logprobs=True,
            )  # fmt: skip
            outs = llm.generate(prompts(rows), params, use_tqdm=False)
            for out, row in zip(outs, rows):
                request_to_payload(
                    out.prompt_logprobs, out.outputs[0].logprobs, num_tokens=len(row), top_k=k
                )
            return sum(len(r) for r in rows)

        # Warm-ups on one row: the plain prefill, then the log-probs path at the largest k
        # (its first call allocates what later calls reuse; untimed it would bias k = 8).
        prefill(batches[0][:1])
        logprobs(batches[0][:1], max(TOP_KS))
        v_bare = _rate(prefill, batches)
        v_k = {str(k): _rate(lambda b, k=k: logprobs(b, k), batches) for k in TOP_KS}
        v_bare_after = _rate(prefill, batches)  # vLLM's prefill again: its drift over the run
        # Shut the engine down here: left to interpreter exit, its shutdown logs go to stdout
        # after the JSON line, which must be the last one.
        vt.close()
        llm = vt = None
        gc.collect()
    v_pooled = bare_rate(v_bare, v_bare_after)
    return {
        "benchmark": "capture-vllm",
        "teacher": args.teacher,
        "device": "cpu",
        "vllm": vllm.__version__,
        "vllm_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
        "torch_threads_transformers": _torch_threads(),
        "tokens": sum(len(r) for b in batches for r in b),
        "transformers_bare_tokens_per_s": hf_bare["tokens_per_s"],
        "transformers_score_tokens_per_s_by_k": {k: v["tokens_per_s"] for k, v in hf_k.items()},
        "vllm_prefill_tokens_per_s": round(v_pooled, 1),
        "vllm_prefill_tokens_per_s_before_after": [
            v_bare["tokens_per_s"],
            v_bare_after["tokens_per_s"],
        ],
        "vllm_prompt_logprobs_tokens_per_s_by_k": {k: v["tokens_per_s"] for k, v in v_k.items()},
        "vllm_prompt_logprobs_vs_prefill_by_k": {
            k: round(v["tokens_per_s"] / v_pooled, 3) for k, v in v_k.items()
        },
        "vllm_prompt_logprobs_vs_transformers_bare_by_k": {
            k: round(v["tokens_per_s"] / hf_bare["tokens_per_s"], 3) for k, v in v_k.items()
        },
        "vllm_prompt_logprobs_vs_transformers_score_by_k": {
            k: round(v["tokens_per_s"] / hf_k[k]["tokens_per_s"], 3) for k, v in v_k.items()
        },
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "targets": {},
    }


def _actor_rate(scorer, blobs: list[bytes]) -> dict:
    """What a teacher actor does per unit (unpack, batched ``Teacher.score``, pack), timed."""
    from logitcache.capture.transport import unpack_rows

    t0 = time.perf_counter()
    for blob in blobs:
        scorer.score_blob(blob)
    elapsed = time.perf_counter() - t0
    tokens = sum(len(r["input_ids"]) for b in blobs for r in unpack_rows(b))
    return {"tokens": tokens, "seconds": elapsed}


def unit_overhead_s(write, scorer, reps: int = 5) -> float:
    """Per-unit fixed cost in this process: a one-row unit's pack, unpack and shard write
    (the median of ``reps``); Ray's own per-task dispatch comes on top (``--unit-overhead-s``)."""
    from logitcache.capture.transport import pack_rows, unpack_rows

    row = {"sample_id": "0", "input_ids": [1, 2], "loss_mask": [True, True]}
    samples = scorer.score_rows([row])
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        write.write(f"overhead{i:02d}", unpack_rows(pack_rows(samples)))
        times.append(time.perf_counter() - t0)
    return sorted(times)[reps // 2]


def pick_unit_tokens(candidates, rate: float, overhead_s: float, share: float) -> int:
    """The smallest unit whose fixed per-unit cost stays within ``share`` of its scoring time
    at ``rate`` tokens/s; smaller units resume finer, drain sooner and hold less memory."""
    for unit in sorted(candidates):
        if overhead_s <= share * unit / rate:
            return unit
    return max(candidates)


def run_sweep(args) -> dict:
    """Batch sizes timed as the actor works; the unit size from the measured per-unit cost.

    Every batch size scores the same rows (``--sweep-tokens`` per pass, one unit as large as the
    largest batch, since a batch never spans units), the grid walked forward and then backward
    so that a drift of the machine's load biases no point. In-process the unit size changes
    nothing but the per-unit fixed cost, so that cost is measured directly and the unit is
    chosen from it (:func:`pick_unit_tokens`).
    """
    from logitcache.capture.executors import unit_rows
    from logitcache.capture.stages import Scorer, WriteStage
    from logitcache.capture.transport import pack_rows
    from logitcache.codecs import CodecContext, get_codec
    from logitcache.storage import Store
    from logitcache.teachers import load_teacher

    t_start = time.perf_counter()
    batches = sorted(args.sweep_batches)
    with tempfile.TemporaryDirectory() as tmp:
        args.tokens, args.unit_tokens = args.sweep_tokens, max(batches)
        cfg, plan = _plan(args, tmp, args.device or "cpu")
        teacher = load_teacher(cfg.teacher_config())
        blobs = [pack_rows(unit_rows(u)) for u in plan.units]

        def scorer(batch_tokens):
            return Scorer(
                None, top_k=args.top_k, rs_samples=0, batch_tokens=batch_tokens, teacher=teacher
            )

        scorer(min(batches)).score_rows(unit_rows(plan.units[0])[:1])  # warm-up: one row
        timed = {b: {"tokens": 0, "seconds": 0.0} for b in batches}
        for order in (batches, batches[::-1]):
            for b in order:
                r = _actor_rate(scorer(b), blobs)
                timed[b]["tokens"] += r["tokens"]
                timed[b]["seconds"] += r["seconds"]
                log.info("sweep: batch_tokens %d: %s", b, r)
        grid = [
            {
                "batch_tokens": b,
                "tokens": t["tokens"],
                "seconds": round(t["seconds"], 3),
                "tokens_per_s": round(t["tokens"] / t["seconds"], 1),
            }
            for b, t in timed.items()
        ]
        best = max(grid, key=lambda g: g["tokens_per_s"])
        vocab = int(teacher.vocab_size)
        write = WriteStage(
            Store.open(os.path.join(tmp, "overhead")),
            get_codec("raw").describe()["spec"],
            CodecContext(vocab_size=vocab, top_k=args.top_k, rs_samples=0),
        )
        local_overhead = unit_overhead_s(write, scorer(best["batch_tokens"]))
    overhead = local_overhead + args.unit_overhead_s
    unit = pick_unit_tokens(args.sweep_units, best["tokens_per_s"], overhead, UNIT_OVERHEAD_SHARE)
    return {
        "benchmark": "capture-sweep",
        "teacher": args.teacher,
        "top_k": args.top_k,
        "seq_len": args.seq_len,
        "sweep_tokens_per_pass": plan.tokens,
        "grid": grid,
        "unit_overhead_s": {
            "in_process": round(local_overhead, 4),
            "ray_dispatch": args.unit_overhead_s,
        },
        "unit_candidates": {
            str(u): {"scoring_s": round(u / best["tokens_per_s"], 2)} for u in args.sweep_units
        },
        "unit_rule": f"smallest unit whose fixed cost is <= {UNIT_OVERHEAD_SHARE:.0%} of its "
        "scoring time at the best batch's rate",
        "best": {"batch_tokens": best["batch_tokens"], "unit_tokens": unit},
        # The same rule for a device scoring 10x / 100x faster (a GPU): the default serves both.
        "unit_tokens_at_rate_x": {
            str(x): pick_unit_tokens(
                args.sweep_units, x * best["tokens_per_s"], overhead, UNIT_OVERHEAD_SHARE
            )
            for x in (1, 10, 100)
        },
        "sweep_wall_s": round(time.perf_counter() - t_start, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "targets": {},
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    from logitcache.capture.options import RunOptions

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=40960, help="planned tokens (>= 30,000 steady)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--unit-tokens", type=int, default=8192)
    p.add_argument(
        "--batch-tokens", type=int, default=RunOptions().batch_tokens, help="default: the library's"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-ray", action="store_true", help="measure the in-process build instead")
    p.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    p.add_argument("--sweep", action="store_true", help="batch sizes timed, unit size chosen")
    p.add_argument("--sweep-batches", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    p.add_argument("--sweep-units", type=int, nargs="+", default=[8192, 16384, 32768, 65536])
    p.add_argument("--sweep-tokens", type=int, default=16384, help="tokens per pass per batch")
    p.add_argument(
        "--unit-overhead-s",
        type=float,
        default=0.05,
        help="Ray's per-unit dispatch cost added to the measured in-process cost",
    )
    p.add_argument("--quick", action="store_true", help="a tiny run that checks the code path")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.seq_len = 1536, 256
        args.unit_tokens, args.batch_tokens = 512, 512
        args.sweep_batches, args.sweep_tokens = [256, 512], 1024
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.sweep:
        result = run_sweep(args)
    elif args.backend == "vllm":
        result = run_vllm(args)
    else:
        result = run_build(args, device)
    result["quick"] = args.quick
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
