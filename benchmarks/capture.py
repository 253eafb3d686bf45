"""Capture throughput: the build against the teacher's bare forward, same teacher/device/tokens.

    python -m benchmarks.capture [--quick] [--tokens 40960] [--device cpu|cuda] [--no-ray]
    python -m benchmarks.capture --sweep           # unit/batch sizes (in-process scoring)
    .venv-vllm/bin/python -m benchmarks.capture --backend vllm   # vLLM beside transformers

1. Plan the rows once (pydoc topics paragraphs, ``--seq-len`` windows, ``--tokens`` cap).
2. Bare forward: the transformers teacher's ``bare_forward(chunked_head=True)`` (backbone, then
   the output layer in the scorer's position chunks, nothing else) over exactly the batches the
   build forms, after a warm-up batch; before and after the build, pooled, so a change of
   machine load biases neither side.
3. The build (local Ray, one teacher actor, encode tasks beside it), reported two ways:
   **steady state** = tokens committed after the first unit / time from the first commit to
   the last (the first unit carries the warm-up); and **end to end** (Ray start, teacher load,
   codec calibration included). The target uses the steady state, over >= 30,000 tokens.
4. Post-processing cost at k = 8, 64, 128: ``Teacher.score`` against the bare forward on the
   same rows (in-process), so the k-dependence of the top-k/tail computation is visible.

``--backend vllm`` (run from ``.venv-vllm``, `make vllm`): the same rows through vLLM's
``prompt_logprobs`` at k = 8, 64, 128 beside vLLM's own prefill without log-probs (its bare
forward) and the transformers teacher on the same CPU. vLLM's CPU build reserves one core for
itself; its engine thread count is reported.

``--sweep``: in-process scoring throughput for a grid of ``--unit-tokens`` x ``--batch-tokens``
(the defaults are chosen from it; see docs/benchmarks.md).

Target (../shared/DESIGN.md): steady-state build >= 0.90 x bare on CPU, >= 0.95 x on a GPU. The
last stdout line is one JSON object with the figures and ``targets``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import time

log = logging.getLogger("benchmarks.capture")
TOP_KS = (8, 64, 128)


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
    """Tokens after the first committed unit / time from its commit to the last commit."""
    run = manifest.stats["run"]
    first = manifest.shards[0].tokens if manifest.shards else 0
    span = run["capture_s"] - (run.get("first_commit_s") or 0.0)
    tokens = manifest.num_tokens - first
    return {
        "tokens": tokens,
        "seconds": round(span, 3),
        "tokens_per_s": round(tokens / span, 1) if span > 0 else None,
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
        plain = bare_forward(teacher, batches[: max(1, len(batches) // 4)], chunked_head=False)
        sample = batches[: max(1, len(batches) // 4)]
        ks = {str(k): score_rate(teacher, sample, k) for k in TOP_KS}
        bare_k = bare_forward(teacher, sample)
    bare = (before["tokens"] + after["tokens"]) / (before["seconds"] + after["seconds"])
    steady = steady_state(manifest)
    run = manifest.stats["run"]
    target = 0.95 if device.startswith("cuda") else 0.90
    ratio = steady["tokens_per_s"] / bare if steady["tokens_per_s"] else None
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
        "build_steady_tokens": steady["tokens"],
        "build_steady_tokens_per_s": steady["tokens_per_s"],
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
                "value": round(ratio, 3) if ratio else None,
                "target": target,
                "op": ">=",
                "unit": "x bare forward tokens/s (steady state)",
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
        hf.bare_forward(batches[0], chunked_head=True)
        hf_bare = bare_forward(hf, batches)
        hf_k = {str(k): score_rate(hf, batches, k) for k in TOP_KS}
        del hf
        vt = load_teacher(dataclasses.replace(cfg.teacher_config(), backend="vllm"))
        llm = vt._engine(max(TOP_KS))
        prompts = [[{"prompt_token_ids": [int(t) for t in r]} for r in b] for b in batches]

        def prefill(i):
            params = vllm.SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)
            llm.generate(prompts[i], params, use_tqdm=False)
            return sum(len(r) for r in batches[i])

        def logprobs(i, k):
            params = vllm.SamplingParams(
                prompt_logprobs=k, logprobs=k, max_tokens=1, temperature=0.0,
                detokenize=False, flat_logprobs=True,
            )  # fmt: skip
            outs = llm.generate(prompts[i], params, use_tqdm=False)
            for out, row in zip(outs, batches[i]):
                request_to_payload(
                    out.prompt_logprobs, out.outputs[0].logprobs, num_tokens=len(row), top_k=k
                )
            return sum(len(r) for r in batches[i])

        idx = list(range(len(batches)))
        prefill(0)  # warm-up
        v_bare = _rate(prefill, idx)
        v_k = {str(k): _rate(lambda i, k=k: logprobs(i, k), idx) for k in TOP_KS}
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
        "vllm_prefill_tokens_per_s": v_bare["tokens_per_s"],
        "vllm_prompt_logprobs_tokens_per_s_by_k": {k: v["tokens_per_s"] for k, v in v_k.items()},
        "vllm_prompt_logprobs_vs_prefill_by_k": {
            k: round(v["tokens_per_s"] / v_bare["tokens_per_s"], 3) for k, v in v_k.items()
        },
        "vllm_prompt_logprobs_vs_transformers_bare_by_k": {
            k: round(v["tokens_per_s"] / hf_bare["tokens_per_s"], 3) for k, v in v_k.items()
        },
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "targets": {},
    }


def run_sweep(args) -> dict:
    """In-process scoring tokens/s over a grid of unit x batch sizes (same rows each time)."""
    from logitcache.teachers import load_teacher

    grid = []
    units = args.sweep_units
    with tempfile.TemporaryDirectory() as tmp:
        teacher = None
        for unit_tokens in units:
            for batch_tokens in args.sweep_batches:
                args.unit_tokens, args.batch_tokens = unit_tokens, batch_tokens
                cfg, plan = _plan(args, tmp, args.device or "cpu")
                if teacher is None:
                    teacher = load_teacher(cfg.teacher_config())
                batches = _batches(plan.units, batch_tokens)
                teacher.score(batches[0], top_k=args.top_k, seeds=[0] * len(batches[0]))
                r = score_rate(teacher, batches, args.top_k)
                grid.append({"unit_tokens": unit_tokens, "batch_tokens": batch_tokens, **r})
                log.info("sweep: %s", grid[-1])
    best = max(grid, key=lambda g: g["tokens_per_s"])
    return {
        "benchmark": "capture-sweep",
        "teacher": args.teacher,
        "top_k": args.top_k,
        "grid": grid,
        "best": best,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "targets": {},
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=40960, help="planned tokens (>= 30,000 steady)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--unit-tokens", type=int, default=8192)
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-ray", action="store_true", help="measure the in-process build instead")
    p.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    p.add_argument("--sweep", action="store_true", help="unit x batch size grid, in-process")
    p.add_argument("--sweep-units", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument("--sweep-batches", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    p.add_argument("--quick", action="store_true", help="a tiny run that checks the code path")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.seq_len = 1536, 256
        args.unit_tokens, args.batch_tokens = 512, 512
        args.sweep_units, args.sweep_batches = [512], [256, 512]
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
