"""The held-out fraction a run actually uses: never an empty held-out split by accident.

The split itself (:mod:`logitcache.data.split`) holds out a sample iff a hash of its id falls
below the fraction, which is stable but, on a small cache, can hold out nothing: 8 sequences
at the default 5% hold out none 66% of the time. For a cache small enough that this can
happen, the trainer reads the sample ids (one small column) and, if none would be held out,
raises the fraction just enough to hold out the one sequence with the lowest hash. The result
depends only on the ids, so a resumed run computes the same split.
"""

from __future__ import annotations

import logging
import math

from logitcache.data.split import heldout_score
from logitcache.format import Cache

log = logging.getLogger(__name__)

# Above this many expected held-out sequences an empty split is practically impossible
# (probability < e^-20), and reading every shard's ids is not worth it.
_CHECK_BELOW_EXPECTED = 20


def effective_heldout_fraction(cache: Cache, fraction: float) -> float:
    """``fraction``, or the smallest larger one that holds out one sequence (see module)."""
    total = cache.manifest.num_sequences
    if total < 2 or total * fraction >= _CHECK_BELOW_EXPECTED:
        return fraction
    from logitcache.data.reader import open_shard

    scores = []
    for shard in cache.shards:
        ids = open_shard(cache, shard).read(columns=["sample_id"]).column("sample_id")
        scores.extend(heldout_score(s) for s in ids.to_pylist())
    if len(scores) < 2 or min(scores) < fraction:
        return fraction
    ordered = sorted(scores)
    raised = math.nextafter(ordered[0], 1.0)  # holds out exactly the lowest-scoring sequence
    if raised > ordered[1]:  # duplicate ids: keep the train split non-empty
        return fraction
    log.warning(
        "--heldout-fraction %g holds out none of this cache's %d sequences; holding out one "
        "(fraction %.4g) so the run has evaluation metrics. Pass a larger --heldout-fraction "
        "to hold out more.",
        fraction,
        len(scores),
        raised,
    )
    return raised
