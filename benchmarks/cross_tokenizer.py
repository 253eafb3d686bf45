"""Cross-tokenizer distillation from a cache: a student with its own tokenizer, trained from the
SmolLM2 cache with ULD or the GOLD hybrid, against the same student trained with CE only on the
same text, steps and batches. Held-out bits per byte compare fairly across tokenizers.

    python -m benchmarks.cross_tokenizer --quick    # tiny student, 8k train tokens: minutes
    python -m benchmarks.cross_tokenizer            # 'small'-sized student, 32k tokens x 2 epochs

The student's tokenizer is a byte-level BPE (default 8,192 ids; SmolLM2 has 49,152) trained
here on the train split only. The caches are the distillation benchmark's (same corpus split,
same build parameters, kept under ``.bench-cache/distill/``: one teacher pass serves both
benchmarks). Also measured: how many student target positions get a teacher target
(coverage), how fast rows are retokenised and aligned (the cost of deriving the student's
tokens at load time), and how many bytes a stored per-token byte-length column would have
added to the cache (the alternative: offsets stored at capture). ``--same-tokenizer`` adds a
reference arm: a student on SmolLM2's own vocabulary trained with ``kl_tail``.

The last stdout line is one JSON object with the figures and ``targets``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._distill_data import RS_SAMPLES, STORE_K, TEACHER, build, split_corpus

log = logging.getLogger("benchmarks.cross_tokenizer")

ROOT = Path(os.environ.get("LOGITCACHE_BENCH_CACHE", ".bench-cache"))
SIZES = {  # name -> Llama fields besides the vocabulary (the train presets' shapes)
    "tiny": dict(hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                  num_attention_heads=8, num_key_value_heads=4),
}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.cross_tokenizer", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="tiny student, 8k tokens, 4 epochs")
    ap.add_argument("--student", default=None, help="tiny | small (default small; tiny --quick)")
    ap.add_argument("--student-vocab", type=int, default=8192, help="student BPE size")
    ap.add_argument("--train-tokens", type=int, default=None)
    ap.add_argument("--heldout-tokens", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=256, help="cache rows (teacher tokens)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--alpha", type=float, default=0.5, help="CE weight of the KD arms")
    ap.add_argument("--arms", default="ce,uld,gold")
    ap.add_argument("--same-tokenizer", action="store_true", help="add the kl_tail reference")
    ap.add_argument("--no-teacher", action="store_true", help="skip the teacher's own bpb")
    ap.add_argument("--teacher", default=TEACHER, help="teacher for capture (and its bpb)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-workers", type=int, default=1, help="DataLoader workers (retokenise)")
    ap.add_argument("--root", default=str(ROOT), help="artifact directory (re-runs reuse it)")
    args = ap.parse_args(argv)
    args.student = args.student or ("tiny" if args.quick else "small")
    args.train_tokens = args.train_tokens or (8192 if args.quick else 32768)
    args.heldout_tokens = args.heldout_tokens or (1024 if args.quick else 2048)
    args.epochs = args.epochs or (4 if args.quick else 2)
    args.lr = args.lr or (1e-2 if args.student == "tiny" else 2e-3)
    return args


def student_tokenizer(path: Path, corpus: Path, vocab: int):
    """A byte-level BPE trained on the train split (held-out text never seen)."""
    from transformers import AutoTokenizer

    from logitcache.crosstok.testing import make_student_tokenizer

    if not (path / "tokenizer.json").exists():
        texts = [json.loads(line)["text"] for line in corpus.open()]
        make_student_tokenizer(path, kind="bytelevel", vocab_size=vocab, texts=texts)
    return AutoTokenizer.from_pretrained(str(path))


def student_dir(path: Path, tokenizer, size: str, max_len: int, seed: int) -> str:
    """A freshly initialised Llama on the student tokenizer, saved once: every arm starts here."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if not (path / "model.safetensors").exists():
        config = LlamaConfig(
            vocab_size=len(tokenizer), max_position_embeddings=max_len, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **SIZES[size],
        )  # fmt: skip
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
    return str(path)


def heldout_metrics(model, tokenizer, teacher_tok, held_uri: str, *, vocab_size: int, device):
    """bits per byte, CE, ULD, GOLD and coverage over every row of the held-out cache."""
    from logitcache.crosstok import CrossTokenizerCollate, Retokenizer
    from logitcache.data import CacheDataset, make_dataloader
    from logitcache.train.cross_tokenizer import evaluate_cross

    retok = Retokenizer(teacher_tok, tokenizer)
    collate = CrossTokenizerCollate(retok, vocab_map=True)
    ds = CacheDataset(held_uri, split="all", shuffle=False)
    loader = make_dataloader(ds, batch_size=4, num_workers=0, collate_fn=collate)
    return evaluate_cross(model, loader, device=device, vocab_size=vocab_size, method="gold")


def retokenise_rate(train_uri: str, teacher_tok, tokenizer, rows: int = 64) -> dict:
    """Teacher tokens per second through CrossTokenizerCollate vs the plain collate."""
    from logitcache.crosstok import CrossTokenizerCollate, Retokenizer
    from logitcache.data import collate
    from logitcache.format import open_cache

    samples = []
    for s in open_cache(train_uri).iter_samples():
        samples.append(s)
        if len(samples) >= rows:
            break
    tokens = sum(len(s["input_ids"]) for s in samples)
    t0 = time.perf_counter()
    retok = Retokenizer(teacher_tok, tokenizer)
    cross = CrossTokenizerCollate(retok, vocab_map=True)
    setup_s = time.perf_counter() - t0
    best_cross = best_plain = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, len(samples), 4):
            cross(samples[i : i + 4])
        best_cross = min(best_cross, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(0, len(samples), 4):
            collate(samples[i : i + 4])
        best_plain = min(best_plain, time.perf_counter() - t0)
    s_tokens = sum(len(retok.align(s["input_ids"], s["loss_mask"])) for s in samples)
    return {
        "rows": len(samples),
        "teacher_tokens": tokens,
        "student_tokens": s_tokens,
        "student_tokens_per_teacher_token": s_tokens / tokens,
        "cross_collate_teacher_tokens_per_s": tokens / best_cross,
        "plain_collate_teacher_tokens_per_s": tokens / best_plain,
        "setup_s": setup_s,
        "vocab_one_to_one": int((retok.vocab_map >= 0).sum()),
    }


def stored_offsets_bytes(train_uri: str, teacher_tok) -> float:
    """Bytes per token a per-token byte-length column (list<uint8>, zstd, as shards are
    written) would add: what storing offsets at capture would have cost."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from logitcache.crosstok import token_bytes
    from logitcache.format import open_cache

    table = token_bytes(teacher_tok)
    lengths, tokens = [], 0
    for s in open_cache(train_uri).iter_samples():
        lengths.append(np.minimum(table.lengths[s["input_ids"]], 255).astype(np.uint8))
        tokens += len(s["input_ids"])
    buf = io.BytesIO()
    col = pa.array(lengths, type=pa.list_(pa.uint8()))
    pq.write_table(pa.table({"piece_bytes": col}), buf, compression="zstd", compression_level=3)
    return buf.tell() / max(1, tokens)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from logitcache.format import open_cache
    from logitcache.losses import LossConfig
    from logitcache.train import TrainConfig, train
    from logitcache.train.cross_tokenizer import load_teacher_tokenizer

    device = torch.device(args.device)
    load_start, t_start = os.getloadavg(), time.perf_counter()
    root = Path(args.root)
    # shared with benchmarks.distill (same teacher): one teacher pass serves both
    dist_root = root / "distill" if args.teacher == TEACHER else root / "cross_tokenizer"
    train_txt, held_txt = split_corpus(dist_root / "corpus")
    tag = f"L{args.seq_len}-t{args.train_tokens}"
    train_uri = dist_root / f"cache-train-{tag}-k{STORE_K}-rs{RS_SAMPLES}"
    held_uri = dist_root / f"cache-heldout-L{args.seq_len}-t{args.heldout_tokens}"
    teacher_dev = "cuda" if device.type == "cuda" else "cpu"
    manifest, capture_s = build(
        train_txt, train_uri, max_tokens=args.train_tokens, seq_len=args.seq_len,
        top_k=STORE_K, rs_samples=RS_SAMPLES, device=teacher_dev, use_ray=False,
        teacher=args.teacher,
    )  # fmt: skip
    build(
        held_txt, held_uri, max_tokens=args.heldout_tokens, seq_len=args.seq_len,
        top_k=1, rs_samples=0, device=teacher_dev, use_ray=False, teacher=args.teacher,
    )  # fmt: skip
    teacher_tok = load_teacher_tokenizer(manifest)

    here = root / "cross_tokenizer"
    tok = student_tokenizer(
        here / f"tokenizer-v{args.student_vocab}", train_txt, args.student_vocab
    )
    # rows get longer in student tokens when its vocabulary is smaller: size positions for it
    max_len = 4 * args.seq_len
    init = student_dir(
        here / f"init-{args.student}-v{args.student_vocab}-s{args.seed}", tok, args.student,
        max_len, args.seed,
    )  # fmt: skip
    steps = max(1, args.epochs * manifest.num_sequences // args.batch_size)
    arms = {
        "ce": dict(cross_tokenizer="uld", loss=LossConfig(kind="ce")),
        "uld": dict(cross_tokenizer="uld", loss=LossConfig(alpha=args.alpha)),
        "gold": dict(cross_tokenizer="gold", loss=LossConfig(alpha=args.alpha)),
    }
    wanted = [a for a in args.arms.split(",") if a]
    if args.same_tokenizer:
        arms["same_tokenizer_kl_tail"] = dict(loss=LossConfig(kind="kl_tail"))
        wanted.append("same_tokenizer_kl_tail")
    from transformers import AutoModelForCausalLM

    results: dict[str, dict] = {}
    for name in wanted:
        out = here / "runs" / f"{name}-{args.student}-{tag}-e{args.epochs}-s{args.seed}"
        same = name == "same_tokenizer_kl_tail"
        cfg = TrainConfig(
            cache=str(train_uri), out=str(out), student=args.student if same else init,
            steps=steps, lr=args.lr, warmup=max(1, steps // 10), batch_size=args.batch_size,
            heldout_fraction=0.02, eval_every=10**9, eval_batches=1, num_workers=args.num_workers,
            device=args.device, seed=args.seed, **arms[name],
        )  # fmt: skip
        t0 = time.perf_counter()
        train(cfg)
        train_s = time.perf_counter() - t0
        model = AutoModelForCausalLM.from_pretrained(str(out / "student")).to(device)
        student_tok = teacher_tok if same else tok
        m = heldout_metrics(
            model, student_tok, teacher_tok, str(held_uri), vocab_size=manifest.vocab_size,
            device=device,
        )  # fmt: skip
        m.update(
            train_s=train_s, steps=steps, params=sum(p.numel() for p in model.parameters()),
            loadavg=os.getloadavg(),
        )  # fmt: skip
        results[name] = m
        log.info("%s: %s", name, m)

    teacher_ref = None
    if not args.no_teacher:
        from logitcache.teachers import TeacherConfig, load_teacher

        teacher = load_teacher(TeacherConfig(teacher=args.teacher, device=teacher_dev))
        teacher_ref = heldout_metrics(
            teacher.model, teacher_tok, teacher_tok, str(held_uri),
            vocab_size=manifest.vocab_size, device=torch.device(teacher_dev),
        )  # fmt: skip

    rate = retokenise_rate(str(train_uri), teacher_tok, tok)
    offsets_bpt = stored_offsets_bytes(str(train_uri), teacher_tok)
    targets = {}
    if "ce" in results:
        for name in ("uld", "gold"):
            if name in results:
                targets[f"{name}_bpb_vs_ce_only"] = {
                    "value": results[name]["eval_bpb"], "target": results["ce"]["eval_bpb"],
                    "op": "<=", "unit": "bits/byte",
                }  # fmt: skip
    figures = {
        "benchmark": "cross_tokenizer",
        "scale": {
            "student": args.student, "student_vocab": len(tok), "teacher": args.teacher,
            "teacher_vocab": manifest.vocab_size, "train_tokens": manifest.num_tokens,
            "heldout_tokens": open_cache(str(held_uri)).manifest.num_tokens,
            "epochs": args.epochs, "steps": steps, "batch_size": args.batch_size,
            "lr": args.lr, "alpha": args.alpha, "top_k": STORE_K, "seed": args.seed,
        },
        "arms": results,
        "teacher_heldout": teacher_ref,
        "retokenise": rate,
        "stored_offsets_bytes_per_token": offsets_bpt,
        "cache_bytes_per_token": (manifest.get("stats") or {}).get("bytes_per_token"),
        "capture_s": capture_s,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "wall_s": time.perf_counter() - t_start,
        "targets": targets,
    }  # fmt: skip
    print(json.dumps(figures, default=float))
    return figures


if __name__ == "__main__":
    main()
