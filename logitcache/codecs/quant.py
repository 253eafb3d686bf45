"""Log-probability quantiser: uniform in nats near the top, coarser where probability is tiny.

The KL cost of an error ``e`` on a log-prob at probability ``p`` is about ``p * e**2 / 2``, so a
fixed step wastes bits on the many tiny entries of a top-k list. We quantise ``f(lp)``
uniformly with ``step``, where ``f`` is a companding curve with slope

    f'(x) = 1                      for x >= knee
          = exp((x - knee) / 2)    for knee - 2 ln(ratio) <= x < knee
          = 1 / ratio              below that

i.e. the effective step is ``step`` above ``knee`` and grows like ``1/sqrt(p)`` below it, capped
at ``ratio * step`` (a cap, so that temperature > 1 at training time, which lifts small
probabilities, still sees bounded errors). ``ratio=1`` is a plain uniform quantiser.

Bound (tested): ``|lp_hat - lp| <= step / 2 / f'(min(lp, lp_hat))`` (so ``<= step/2`` above the
knee and ``<= ratio*step/2`` everywhere), for ``floor <= lp <= 0``. Level 65535 is ``-inf``;
finite values below ``floor`` (a probability that is 0 in float32) are stored as the floor, and
values above 0 (rounding noise) as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from logitcache.errors import CodecError

NEG_INF_LEVEL = 0xFFFF
MAX_FINITE_LEVEL = NEG_INF_LEVEL - 1
MIN_FLOOR = -200.0  # nats: the quantiser must reach at least this deep


@dataclass(frozen=True, kw_only=True)
class LogQuantiser:
    step: float
    knee: float = -5.0
    ratio: float = 8.0
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step) and self.step > 0):
            raise CodecError(f"step={self.step!r}: must be a positive number of nats, e.g. 0.125")
        if not (math.isfinite(self.knee) and self.knee <= 0):
            raise CodecError(f"knee={self.knee!r}: must be a log-prob <= 0, e.g. -5")
        if not (math.isfinite(self.ratio) and 1 <= self.ratio <= 1024):
            raise CodecError(f"ratio={self.ratio!r}: must be in [1, 1024]; 1 = uniform steps")
        if self.floor > MIN_FLOOR:
            raise CodecError(
                f"step={self.step} with ratio={self.ratio} reaches only {self.floor:.1f} nats "
                f"(65534 levels); use a larger step or ratio so that it reaches {MIN_FLOOR}"
            )
        lut = self._inverse(-np.arange(NEG_INF_LEVEL + 1, dtype=np.float64) * self.step)
        lut[NEG_INF_LEVEL] = -np.inf
        lut = lut.astype(np.float32)
        lut.flags.writeable = False
        object.__setattr__(self, "_lut", lut)

    # -- the companding curve -----------------------------------------------------------------
    @property
    def _low_knee(self) -> float:  # where the slope reaches 1/ratio
        return self.knee - 2.0 * math.log(self.ratio)

    @property
    def _f_low_knee(self) -> float:
        return self.knee - 2.0 * (1.0 - 1.0 / self.ratio)

    def forward(self, lp: np.ndarray) -> np.ndarray:
        lp = np.asarray(lp, np.float64)
        mid = self.knee - 2.0 * (1.0 - np.exp((np.maximum(lp, self._low_knee) - self.knee) / 2))
        low = self._f_low_knee + (lp - self._low_knee) / self.ratio
        return np.where(lp >= self.knee, lp, np.where(lp >= self._low_knee, mid, low))

    def _inverse(self, f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mid = self.knee + 2.0 * np.log(np.maximum(1.0 - (self.knee - f) / 2.0, 1e-300))
        low = self._low_knee + (f - self._f_low_knee) * self.ratio
        return np.where(f >= self.knee, f, np.where(f >= self._f_low_knee, mid, low))

    def slope(self, lp: np.ndarray) -> np.ndarray:
        """``f'(lp)``: how much finer than ``step`` the effective step is at ``lp``."""
        lp = np.asarray(lp, np.float64)
        s = np.exp(np.minimum(lp - self.knee, 0.0) / 2.0)
        return np.maximum(s, 1.0 / self.ratio)

    @property
    def floor(self) -> float:
        """The lowest finite log-prob that is represented (level 65534)."""
        return float(self._inverse(np.array(-MAX_FINITE_LEVEL * self.step)))

    def bound(self, lp: np.ndarray, lp_hat: np.ndarray) -> np.ndarray:
        """The declared error bound for each pair (see the module docstring)."""
        return self.step / 2.0 / self.slope(np.minimum(lp, lp_hat))

    # -- quantise / dequantise ----------------------------------------------------------------
    def quantise(self, lp: np.ndarray) -> np.ndarray:
        """Log-probs -> uint16 levels (0 = log-prob 0; larger = less probable)."""
        from logitcache.codecs import kernels  # numba: imported on first use

        lp = np.asarray(lp)
        if lp.dtype not in (np.float32, np.float64):
            lp = lp.astype(np.float64)
        flat = np.ascontiguousarray(lp).reshape(-1)
        out = np.empty(flat.shape, np.uint16)
        nans = kernels.quantise(flat, self.step, self.knee, self.ratio, self.floor, out)
        if nans:
            raise CodecError("log-probs contain NaN; check the teacher's logits (fp16 overflow?)")
        return out.reshape(lp.shape)

    def quantise_reference(self, lp: np.ndarray) -> np.ndarray:
        """:meth:`quantise` in plain numpy: the spec's formula, kept to test the kernel."""
        lp = np.asarray(lp, np.float64)
        finite = np.clip(lp, self.floor, 0.0)
        levels = np.rint(-self.forward(finite) / self.step)
        levels = np.clip(levels, 0, MAX_FINITE_LEVEL)
        return np.where(np.isneginf(lp), NEG_INF_LEVEL, levels).astype(np.uint16)

    @property
    def lut(self) -> np.ndarray:
        """float32 ``[65536]``: the decoded log-prob of every level (read-only)."""
        return self._lut

    def dequantise(self, levels: np.ndarray) -> np.ndarray:
        """uint16 levels -> float32 log-probs (one table lookup)."""
        return self._lut[levels]
