"""The held-out split: a sample is held out iff a hash of its ``sample_id`` falls below the
fraction. It depends on nothing else (not the seed, the shard layout or the epoch), so the
split is the same on every machine, across resumptions and when the cache grows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from logitcache.errors import ConfigError

SPLITS = ("all", "train", "heldout")


def heldout_score(sample_id: str) -> float:
    """A uniform number in [0, 1) fixed by ``sample_id``."""
    digest = hashlib.blake2b(sample_id.encode(), digest_size=8, person=b"lc-split").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_mask(sample_ids: Iterable[str], split: str, heldout_fraction: float) -> np.ndarray:
    """Boolean mask of the samples that belong to ``split``."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    ids = list(sample_ids)
    if split == "all":
        return np.ones(len(ids), dtype=bool)
    held = np.fromiter((heldout_score(s) < heldout_fraction for s in ids), bool, len(ids))
    return held if split == "heldout" else ~held
