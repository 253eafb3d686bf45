"""What a codec is: a pair of functions between a :class:`PayloadBatch` and Parquet columns.

A codec owns the soft-label columns of a shard (top-k ids, top-k log-probs, tail mass, sampled
draws); the plain columns (sample id, input ids, loss mask) are the same for every codec. Codecs
work on whole batches of rows with positions flattened, so decoding a row group is a handful of
vectorised numpy calls rather than a Python loop per token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa


@dataclass(frozen=True, kw_only=True)
class CodecContext:
    """What a codec may rely on besides its own parameters (all of it is in the manifest)."""

    vocab_size: int
    top_k: int
    rs_samples: int = 0


@dataclass
class PayloadBatch:
    """Soft labels of several sequences, positions flattened in row order.

    ``lengths[r]`` is the number of positions of row r; ``N = lengths.sum()``.
    ``topk_ids``/``topk_logprobs`` are ``[N, k]`` (k may be 0); ``tail_logmass`` is ``[N]``.
    Sampled draws are ragged per position: ``rs_nunique[N]`` distinct ids each, concatenated
    into ``rs_ids[M]`` and ``rs_counts[M]`` (M = rs_nunique.sum()).
    """

    lengths: np.ndarray
    topk_ids: np.ndarray
    topk_logprobs: np.ndarray
    tail_logmass: np.ndarray
    rs_nunique: np.ndarray | None = None
    rs_ids: np.ndarray | None = None
    rs_counts: np.ndarray | None = None

    @property
    def num_positions(self) -> int:
        return int(self.lengths.sum())

    @property
    def has_sampled(self) -> bool:
        return self.rs_ids is not None


class Codec(ABC):
    """Encode/decode soft labels. Subclasses register a ``name`` and declare their params."""

    name: ClassVar[str]
    lossless: ClassVar[bool]

    def __init__(self, **params: Any) -> None:
        self.params = params

    @property
    def spec(self) -> str:
        """``name:key=value,...``: recorded in the manifest, enough to rebuild the codec."""
        if not self.params:
            return self.name
        body = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}:{body}"

    def describe(self) -> dict[str, Any]:
        """The manifest's ``codec`` section."""
        return {"spec": self.spec, "name": self.name, "lossless": self.lossless, **self.params}

    @property
    def fitted(self) -> bool:
        """Whether :meth:`calibrate` has fitted something into this codec (kept on resume)."""
        return False

    def calibrate(self, samples: Sequence[dict[str, Any]], ctx: CodecContext) -> Codec:
        """A codec tuned on a first sample of the build (e.g. a fitted rank table).

        Called once, on the first unit's labels, before its shard is encoded; the result's
        :attr:`spec` must rebuild it exactly. Codecs without anything to tune return themselves.
        """
        return self

    @abstractmethod
    def fields(self, ctx: CodecContext) -> list[pa.Field]:
        """The Parquet columns this codec writes, in order."""

    @abstractmethod
    def encode(self, batch: PayloadBatch, ctx: CodecContext) -> dict[str, pa.Array]:
        """One arrow array per field, one element per row."""

    @abstractmethod
    def decode(
        self, columns: dict[str, pa.Array], lengths: np.ndarray, ctx: CodecContext
    ) -> PayloadBatch:
        """Inverse of :meth:`encode` (exact, or within the declared quantisation step)."""
