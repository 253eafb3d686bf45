"""The student's output layer + KD loss, dense against fused, and the whole student step.

1. Loss forward + backward, from final hidden states ``[N, d]`` and an output weight ``[V, d]``
   (d = 576, N = 8,192 positions; V = 49,152, 151,936 and 262,144 where memory allows), for
   ``kl_tail`` at k = 64 and ``rs_kd`` with 50 draws. Dense = ``h @ W.T`` then
   :func:`~logitcache.losses.compute_loss` (what the trainer did before); fused =
   :func:`~logitcache.losses.fused_loss`. Each measurement runs in a fresh subprocess, which
   reports its wall time and its peak memory: on CPU the RSS high-water mark (VmHWM, reset via
   /proc/self/clear_refs after setup and warm-up, with a fixed glibc mmap threshold so freed
   buffers leave the RSS) minus the RSS before the loss, on GPU
   ``torch.cuda.max_memory_allocated`` minus the allocation before it. A dense run that would
   not fit in the available memory is run with ``chunk_size`` (the dense path's own memory cap,
   which still builds ``[N, V]`` logits and their gradient) and says so; if even that does not
   fit, it is skipped.
2. The whole student step (forward, loss, backward) of the ``tiny`` and ``small`` presets at
   V = 49,152, batch 8 x 256: KD with the fused loss (the trainer's default), KD with the dense
   loss, and a *plain CE step*: the model's dense logits and torch ``cross_entropy`` (the
   ordinary training step KD is compared with; a CE-only student could itself use the fused
   path and be faster still). The variants are timed interleaved, step by step, so load on a
   shared machine hits them alike.

    python -m benchmarks.student_step --quick     # small sizes, well under a minute
    python -m benchmarks.student_step             # the figures in docs/benchmarks.md
    python -m benchmarks.student_step --device cuda

The last stdout line is one JSON object with the figures and ``targets``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

import torch

log = logging.getLogger("benchmarks.student_step")

K, RS_DRAWS = 64, 50


# -- part 1: the loss alone, one subprocess per measurement ------------------------------------
def _targets(n: int, v: int, kind: str, device, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Cache-shaped targets: a peaked teacher's top-k + tail, or its RS draws (ids, weights)."""
    batch = {"labels": torch.randint(0, v, (n,), generator=g)}
    if kind == "rs_kd":
        # ~12 unique ids per position out of 50 draws, as the RS-KD paper reports
        u = 12
        batch["rs_ids"] = torch.randint(0, v, (n, u), generator=g, dtype=torch.int32)
        w = torch.rand(n, u, generator=g)
        batch["rs_weights"] = w / w.sum(-1, keepdim=True)
    else:
        lp = torch.log_softmax(torch.randn(n, K + 1, generator=g) * 2.0, -1)
        batch["topk_ids"] = torch.randint(0, v, (n, K), generator=g, dtype=torch.int32)
        batch["topk_logprobs"] = lp[:, :K].contiguous()
        batch["tail_logmass"] = lp[:, K].contiguous()
    return {k: t.to(device) for k, t in batch.items()}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_loss(
    impl: str, n: int, d: int, v: int, kind: str, device: str, reps: int, chunk: int | None
):
    """One loss measurement (run in a fresh process): seconds and peak bytes above setup."""
    from logitcache.losses import LossConfig, compute_loss, fused_loss

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    hidden = (torch.randn(n, d, generator=g) * 0.5).to(dev).requires_grad_(True)
    weight = (torch.randn(v, d, generator=g) * 0.05).to(dev).requires_grad_(True)
    batch = _targets(n, v, kind, dev, g)
    cfg = LossConfig(kind=kind, chunk_size=chunk)

    def step():
        hidden.grad = weight.grad = None
        if impl == "dense":
            loss, _ = compute_loss(hidden @ weight.t(), batch, cfg, vocab_size=v)
        else:
            loss, _ = fused_loss(hidden, weight, batch, cfg, vocab_size=v)
        loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: first-touch allocations, thread pools
    times = []
    hidden.grad = weight.grad = None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        base = _rss_kib("VmRSS") * 1024
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss_kib("VmHWM") * 1024 - base
    return {"seconds": min(times), "peak_bytes": int(peak)}


def _measure_env() -> dict[str, str]:
    """A fixed glibc mmap threshold: every buffer of 128 KiB or more is its own mapping and
    is unmapped when freed, so the RSS high-water mark tracks live tensors (glibc's default
    raises the threshold after the first free and then reuses heap pages, hiding them)."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def _available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return int(free)
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _dense_estimate(n: int, v: int, d: int, chunk: int | None) -> int:
    """Rough peak of the dense path: ~6 [N, V] float32 tensors unchunked (logits, exp and
    masked copies, their gradients), ~2.5 with chunk_size (logits and their gradient)."""
    per = n * v * 4
    return int((2.5 if chunk else 6.0) * per + 3 * v * d * 4)


def loss_rows(args) -> list[dict]:
    rows = []
    avail = _available_bytes(args.device)
    for v in args.vocab:
        for kind in ("kl_tail", "rs_kd"):
            for impl in ("dense", "fused"):
                chunk, note = None, None
                if impl == "dense" and _dense_estimate(args.positions, v, args.hidden, None) > (
                    0.7 * avail
                ):
                    chunk = 1024
                    note = (
                        f"unchunked dense needs ~"
                        f"{_dense_estimate(args.positions, v, args.hidden, None) / 2**30:.0f} GiB; "
                        "measured with chunk_size=1024"
                    )
                    if _dense_estimate(args.positions, v, args.hidden, chunk) > 0.7 * avail:
                        rows.append(
                            dict(impl=impl, vocab=v, kind=kind, skipped="does not fit in memory")
                        )
                        continue
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.student_step",
                    "--measure-loss",
                    json.dumps(
                        dict(
                            impl=impl,
                            n=args.positions,
                            d=args.hidden,
                            v=v,
                            kind=kind,
                            device=args.device,
                            reps=args.reps,
                            chunk=chunk,
                        )
                    ),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=_measure_env())
                if proc.returncode != 0:
                    rows.append(
                        dict(impl=impl, vocab=v, kind=kind, skipped=proc.stderr.strip()[-300:])
                    )
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                row = dict(impl=impl, vocab=v, kind=kind, **r)
                if note:
                    row["note"] = note
                rows.append(row)
                log.info("loss %s", row)
    return rows


# -- part 2: the whole student step ------------------------------------------------------------
def _manifest(vocab: int, seq_len: int):
    from logitcache.format import Manifest

    return Manifest(
        teacher={"name": "synthetic"},
        tokenizer={"vocab_size": vocab, "tokenizer_size": vocab},
        capture={"top_k": K, "seq_len": seq_len},
        codec="raw",
        corpus={},
    )


def step_rows(args) -> list[dict]:
    dev = torch.device(args.device)
    b, t, v = args.batch, args.seq_len, args.step_vocab
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, v, (b, t), generator=g)
    labels = torch.cat([ids[:, 1:], torch.full((b, 1), -100)], 1)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones(b, t, dtype=torch.long),
        "labels": labels,
    }
    flat = _targets(b * t, v, "kl_tail", "cpu", g)
    for key in ("topk_ids", "topk_logprobs", "tail_logmass"):
        batch[key] = flat[key].view(b, t, *flat[key].shape[1:])
    batch = {k: x.to(dev) for k, x in batch.items()}
    return [_time_preset(preset, batch, v, t, dev, args.steps) for preset in args.presets]


def _time_preset(preset: str, batch, v: int, t: int, dev, steps: int) -> dict:
    import torch.nn.functional as F

    from logitcache.losses import LossConfig
    from logitcache.train.objective import StudentObjective
    from logitcache.train.student import preset_student

    model = preset_student(preset, _manifest(v, t), seed=0).to(dev).train()
    fused = StudentObjective(model, LossConfig(kind="kl_tail"), vocab_size=v)
    dense = StudentObjective(model, LossConfig(kind="kl_tail", impl="dense"), vocab_size=v)

    def ce_step():
        z = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        F.cross_entropy(z.view(-1, z.shape[-1]), batch["labels"].view(-1)).backward()

    variants = {
        "kd_fused": lambda: fused(batch)[0].backward(),
        "kd_dense": lambda: dense(batch)[0].backward(),
        "ce_plain": ce_step,
        "body_only": lambda: fused.hidden(batch).sum().backward(),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(steps + 1):  # the first round warms up
        for name, fn in variants.items():
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if rep:
                times[name].append(time.perf_counter() - t0)
    row = {
        "preset": preset,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        **{f"{k}_s": round(statistics.median(x), 4) for k, x in times.items()},
    }
    row["kd_fused_over_ce"] = round(row["kd_fused_s"] / row["ce_plain_s"], 3)
    row["kd_dense_over_ce"] = round(row["kd_dense_s"] / row["ce_plain_s"], 3)
    log.info("step %s", row)
    return row


def summarise(loss: list[dict], steps: list[dict], args) -> dict:
    by = {(r["impl"], r["vocab"], r["kind"]): r for r in loss if "seconds" in r}
    ratios = []
    for (impl, v, kind), r in by.items():
        if impl == "fused" and ("dense", v, kind) in by:
            dense = by[("dense", v, kind)]
            ratios.append(
                dict(
                    vocab=v,
                    kind=kind,
                    time_ratio=round(r["seconds"] / dense["seconds"], 3),
                    memory_ratio=round(r["peak_bytes"] / max(1, dense["peak_bytes"]), 4),
                    dense_chunked="note" in dense,
                )
            )
    gpu = args.device.startswith("cuda")
    targets = {}
    mem_v = 151_936 if 151_936 in args.vocab else max(args.vocab)
    mem = [x["memory_ratio"] for x in ratios if x["vocab"] == mem_v and x["kind"] == "kl_tail"]
    if mem:
        targets[f"fused_over_dense_loss_memory_v{mem_v}"] = {
            "value": mem[0],
            "target": 0.15,
            "op": "<=",
            "unit": "ratio",
        }
    if ratios:
        targets["fused_over_dense_loss_time_worst"] = {
            "value": max(x["time_ratio"] for x in ratios),
            "target": 0.8 if gpu else 1.0,
            "op": "<=",
            "unit": "ratio",
        }
    for r in steps:
        targets[f"kd_step_over_ce_step_{r['preset']}"] = {
            "value": r["kd_fused_over_ce"],
            "target": 1.15,
            "op": "<=",
            "unit": "ratio",
        }
    return {
        "benchmark": "student_step",
        "quick": args.quick,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "positions": args.positions,
        "hidden": args.hidden,
        "loss": loss,
        "ratios": ratios,
        "steps": steps,
        "targets": targets,
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.student_step", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--positions", type=int, default=None, help="N (default 8192)")
    ap.add_argument("--hidden", type=int, default=576, help="d of the loss benchmark")
    ap.add_argument("--vocab", type=int, nargs="+", default=None)
    ap.add_argument("--reps", type=int, default=None, help="timed loss runs (min is kept)")
    ap.add_argument("--presets", nargs="+", default=None, help="student presets (tiny small)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--step-vocab", type=int, default=49_152)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    ap.add_argument("--skip-loss", action="store_true")
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--measure-loss", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.positions = args.positions or 512
        args.hidden = 64 if args.hidden == 576 else args.hidden
        args.vocab = args.vocab or [8192, 16384]
        args.reps = args.reps or 1
        args.presets = args.presets or ["tiny"]
        args.steps = args.steps or 1
        args.batch, args.seq_len = min(args.batch, 2), min(args.seq_len, 64)
        args.step_vocab = min(args.step_vocab, 8192)
    args.positions = args.positions or 8192
    args.vocab = args.vocab or [49_152, 151_936, 262_144]
    args.reps = args.reps or 2
    args.presets = args.presets or ["tiny", "small"]
    args.steps = args.steps or 4
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the measuring subprocesses
    if args.measure_loss:
        spec = json.loads(args.measure_loss)
        print(json.dumps(measure_loss(**spec)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    loss = [] if args.skip_loss else loss_rows(args)
    steps = [] if args.skip_steps else step_rows(args)
    print(json.dumps(summarise(loss, steps, args)))


if __name__ == "__main__":
    main()
