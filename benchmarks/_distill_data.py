"""Inputs of the distillation benchmark, built once and kept under ``.bench-cache/distill/``.

* The corpus: Python's documentation (``pydoc_data.topics``), split into train and held-out
  **by document** (a hash of the topic name), written as two JSONL files.
* The train cache: one ``logitcache build`` (in-process, ``build_cache``) with top-128 and 50
  sampled draws per position. The k = 8 and k = 32 arms are derived from it exactly: the
  stored entries are sorted by log-prob and truncated, and the dropped entries' mass is added
  to the stored tail (``logaddexp``), so one teacher pass serves every cached arm. The only
  difference from a separate ``--top-k 8`` build is the codec's rounding of the stored values
  (1/8-nat-class quantisation), which a separate build would apply too.
* The held-out set: the held-out documents packed into rows by the same build code (so rows
  and loss masks match training), and the teacher's **dense** log-probs over all V ids for
  those rows, stored as float16 ``.npy`` (never pickled) and reused by every arm's evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

TEACHER = "smollm2-135m"
STORE_K = 128
RS_SAMPLES = 50


def _pydoc_docs() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(name, topics[name]) for name in sorted(topics)]


# Not corpus material: pydoc_data holds the pydoc topics themselves (a leak into the held-out
# split), encodings/ is code-page tables, site-packages is not the standard library.
_SKIP_DIRS = {"site-packages", "__pycache__", "pydoc_data", "encodings"}


def _stdlib_files(*, tests: bool) -> list[tuple[str, Path]]:
    """(relative path, path) of the standard library's .py files, sorted (deterministic for a
    given Python version; the version is recorded with the corpus)."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        is_test = any(part in ("test", "tests", "idle_test") for part in rel_dir.parts)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        if is_test and not tests:
            continue
        out += [
            (str(rel_dir / f), Path(dirpath) / f) for f in sorted(filenames) if f.endswith(".py")
        ]
    return sorted(out)


def _docstrings(source: str) -> str | None:
    """The module's, classes' and functions' docstrings, each under its qualified name."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    parts = []

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    parts.append(f"{name}\n{doc}")
                visit(child, name + ".")

    doc = ast.get_docstring(tree)
    if doc:
        parts.append(doc)
    visit(tree, "")
    return "\n\n".join(parts) or None


def corpus_documents(corpus: str) -> list[tuple[str, str]]:
    """(key, text) documents of a benchmark corpus: ``pydoc`` (the 79 pydoc topics), ``docs``
    (those plus one document of docstrings per standard-library module, tests excluded) or
    ``docs+source`` (the topics plus every standard-library file's source text, tests
    included; the source holds the docstrings, so they are not added twice)."""
    docs = [(f"pydoc:{name}", text) for name, text in _pydoc_docs()]
    if corpus == "pydoc":
        return docs
    if corpus not in ("docs", "docs+source"):
        raise ValueError(f"unknown corpus {corpus!r}; choose pydoc, docs or docs+source")
    for rel, path in _stdlib_files(tests=corpus == "docs+source"):
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = source if corpus == "docs+source" else _docstrings(source)
        if text and text.strip():
            docs.append((f"stdlib:{rel}", text))
    return docs


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def split_corpus(root: Path, corpus: str = "pydoc", heldout_every: int = 12) -> tuple[Path, Path]:
    """Write ``train.jsonl`` / ``heldout.jsonl``; a document is held out when its key hashes to
    0 mod ``heldout_every`` (deterministic on every machine and Python version). ``pydoc``
    keeps the topics in name order (the original setting); the larger corpora are written in
    hash order, so a ``--max-tokens`` prefix mixes their sources. ``meta.json`` records the
    Python version and sizes; an existing split of the same corpus is reused."""
    import sys

    root.mkdir(parents=True, exist_ok=True)
    train, heldout, meta_path = root / "train.jsonl", root / "heldout.jsonl", root / "meta.json"
    python = sys.version.split()[0]
    if meta_path.exists() and train.exists() and heldout.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("corpus") == corpus and meta.get("python") == python:
            return train, heldout
    docs = corpus_documents(corpus)
    if corpus != "pydoc":
        docs.sort(key=lambda d: (_hash("order:" + d[0]), d[0]))
    counts = {"train": [0, 0], "heldout": [0, 0]}
    # "pydoc" keeps hashing the bare topic name, as before this corpus grew
    bare = corpus == "pydoc"
    with train.open("w") as ft, heldout.open("w") as fh:
        for key, text in docs:
            h = _hash(key.split(":", 1)[1] if bare else key)
            split = "heldout" if h % heldout_every == 0 else "train"
            (fh if split == "heldout" else ft).write(json.dumps({"text": text}) + "\n")
            counts[split][0] += 1
            counts[split][1] += len(text)
    meta = {"corpus": corpus, "python": python, "documents": {k: v[0] for k, v in counts.items()},
            "chars": {k: v[1] for k, v in counts.items()}}  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    return train, heldout


def build(
    corpus: Path,
    out: Path,
    *,
    max_tokens: int,
    seq_len: int,
    top_k: int,
    rs_samples: int,
    device: str,
    use_ray: bool,
    teacher: str = TEACHER,
) -> tuple[Any, float]:
    """``logitcache build`` into ``out`` (skipped when complete); returns (manifest, capture s).

    The capture time of a finished build is read back from ``out/capture_s.json``.
    """
    from logitcache.capture import CaptureConfig, build_cache
    from logitcache.capture.options import (
        LabelOptions,
        OutputOptions,
        PackingOptions,
        RunOptions,
        TeacherOptions,
    )
    from logitcache.format import open_cache

    stamp = out / "capture_s.json"
    if stamp.exists():
        return open_cache(str(out)).manifest, float(json.loads(stamp.read_text())["capture_s"])
    t0 = time.perf_counter()
    build_cache(
        CaptureConfig(
            teacher=TeacherOptions(model=teacher, device=device),
            labels=LabelOptions(top_k=top_k, rs_samples=rs_samples),
            corpus=[str(corpus)],
            packing=PackingOptions(seq_len=seq_len, max_tokens=max_tokens),
            run=RunOptions(use_ray=use_ray, progress="log"),
            output=OutputOptions(out=str(out)),
        )
    )
    capture_s = time.perf_counter() - t0
    stamp.write_text(json.dumps({"capture_s": capture_s}))
    return open_cache(str(out)).manifest, capture_s


@dataclass
class Heldout:
    """Held-out rows and the teacher's dense log-probs at their target positions."""

    input_ids: torch.Tensor  # [R, T] int64 (padded to the longest row)
    labels: torch.Tensor  # [R, T] int64, -100 where not a target
    attention_mask: torch.Tensor  # [R, T] bool
    teacher_logprobs: torch.Tensor  # [N, V] float16, N = (labels != -100).sum(), row-major

    @property
    def tokens(self) -> int:
        return int(self.teacher_logprobs.shape[0])


def heldout_set(cache_uri: Path, teacher, *, device: str) -> Heldout:
    """Rows of the held-out cache + dense teacher log-probs (computed once, then loaded)."""
    from logitcache.data import collate
    from logitcache.format import open_cache

    samples = sorted(open_cache(str(cache_uri)).iter_samples(), key=lambda s: s["sample_id"])
    batch = collate(samples)
    ids, labels = batch["input_ids"], batch["labels"]
    dense = cache_uri / "teacher_dense_fp16.npy"
    if dense.exists():
        lp = torch.from_numpy(np.load(dense))
    else:
        if teacher is None:
            raise RuntimeError("teacher needed to compute held-out dense log-probs")
        t0 = time.perf_counter()
        rows = [s["input_ids"] for s in samples]
        mask = labels != -100
        parts = [
            logp.to(torch.float16)[mask[i, : len(r)]]
            for i, (r, logp) in enumerate(zip(rows, teacher.forward_logprobs(rows)))
        ]
        lp = torch.cat(parts)
        np.save(dense, lp.numpy())
        log.info(
            "held-out teacher dense log-probs: %d positions in %.1fs",
            len(lp),
            time.perf_counter() - t0,
        )
    return Heldout(
        input_ids=ids, labels=labels, attention_mask=batch["attention_mask"], teacher_logprobs=lp
    )


def derive_topk(batch: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """The top-``k`` view of a collated top-``K`` batch (K >= k): sort by stored log-prob,
    keep the first k, fold the rest into the tail (``log(p_tail + sum of dropped)``)."""
    lp, ids = batch["topk_logprobs"], batch["topk_ids"]
    if lp.shape[-1] < k:
        raise ValueError(f"cannot derive top-{k} from a top-{lp.shape[-1]} cache")
    order = lp.argsort(dim=-1, descending=True)
    lp_sorted = lp.gather(-1, order)
    ids_sorted = ids.gather(-1, order)
    dropped = torch.logsumexp(lp_sorted[..., k:], dim=-1) if lp.shape[-1] > k else None
    tail = batch["tail_logmass"]
    if dropped is not None:
        tail = torch.logaddexp(tail, dropped)
    out = dict(batch)
    out.update(topk_ids=ids_sorted[..., :k], topk_logprobs=lp_sorted[..., :k], tail_logmass=tail)
    return out


def bytes_per_token(cache_uri: Path, *, k: int, rs: bool) -> float:
    """Parquet bytes per token of the cache restricted to top-``k`` (and the draws if ``rs``),
    re-encoded with the cache's own (calibrated) codec and the writer's Parquet settings."""
    from logitcache.codecs import CodecContext, get_codec
    from logitcache.format import open_cache
    from logitcache.format.shard import encode_table, table_to_parquet_bytes

    cache = open_cache(str(cache_uri))
    m = cache.manifest
    codec = get_codec(m.codec["spec"])
    ctx = CodecContext(vocab_size=m.vocab_size, top_k=k, rs_samples=m.rs_samples if rs else 0)
    samples, tokens = [], 0
    for s in cache.iter_samples():
        lp = s["topk_logprobs"]
        order = np.argsort(-lp, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(lp, order, 1)
        rest = np.take_along_axis(lp, np.argsort(-lp, axis=1, kind="stable")[:, k:], 1)
        tail = (
            np.logaddexp(s["tail_logmass"], np.logaddexp.reduce(rest, axis=1))
            if rest.size
            else s["tail_logmass"]
        )
        d = {
            "sample_id": s["sample_id"],
            "input_ids": s["input_ids"],
            "loss_mask": s["loss_mask"],
            "topk_ids": np.take_along_axis(s["topk_ids"], order, 1).astype(np.int32),
            "topk_logprobs": kept.astype(np.float32),
            "tail_logmass": np.asarray(tail, np.float32),
        }
        if rs:
            d["rs_ids"], d["rs_counts"] = s["rs_ids"], s["rs_counts"]
        samples.append(d)
        tokens += len(s["input_ids"])
    data = table_to_parquet_bytes(encode_table(samples, codec, ctx))
    return len(data) / max(1, tokens)
