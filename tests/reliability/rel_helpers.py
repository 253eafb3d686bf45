"""Helpers shared by the reliability tests (imported by name; pytest puts this dir on sys.path)."""

from __future__ import annotations

import hashlib
import os

K = 8


def build_kwargs(teacher_dir: str, corpus, out: str, **kw) -> dict:
    """Keyword arguments of a small, fast, deterministic in-process build."""
    cfg = {
        "teacher": teacher_dir,
        "corpus": corpus if isinstance(corpus, list) else [corpus],
        "out": out,
        "top_k": K,
        "seq_len": 64,
        "max_tokens": 400,
        "unit_tokens": 200,
        "use_ray": False,
        "progress": "off",
        "codec": "raw",
        "dtype": "float32",
        "device": "cpu",
    }
    cfg.update(kw)
    return cfg


def cli_args(teacher_dir: str, corpus, out: str, *extra: str) -> list[str]:
    """The same small build as ``logitcache build`` arguments."""
    corpus = corpus if isinstance(corpus, list) else [corpus]
    return [
        "build", "--teacher", teacher_dir, "--corpus", *corpus, "--out", out,
        "--top-k", str(K), "--seq-len", "64", "--max-tokens", "400", "--unit-tokens", "200",
        "--no-ray", "--progress", "off", "--codec", "raw", "--device", "cpu",
        "--dtype", "float32", *extra,
    ]  # fmt: skip


def snapshot(root: str) -> dict[str, str]:
    """{relative path: sha256} of every file under a local directory (missing: empty)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out
