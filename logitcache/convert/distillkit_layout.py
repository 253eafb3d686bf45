"""DistillKit's compressed top-k layout (``DistributionQuantizationConfig``), decoded and encoded.

Written from the layout DistillKit's ``distillkit/compression/`` modules define (bitpack,
monotonic_logprobs, config); no DistillKit code is used or needed. Per position (a row of the
Parquet list columns):

- ``bytepacked_indices``: the k token ids, most probable first, each ``b = ceil(log2(d))`` bits,
  concatenated most-significant bit first into one bit stream, zero-padded to
  ``ceil(k * b / 8)`` bytes.
- ``compressed_logprobs``: ``logprob_bits() / 8`` bytes, in this order:
  1. ``exact_k`` values in ``exact_dtype`` (little-endian IEEE bytes; bfloat16 is the top half
     of a float32);
  2. ``len(polynomial_terms)`` coefficients in ``term_dtype``;
  3. for each residual bin: its scale in ``scale_dtype``, then ``num_elements`` codes of
     ``element_bits`` bits, packed as the indices are and padded to whole bytes.
  The whole is padded to whole bytes.
- Decoding the m = k - exact_k approximated values: ``t = 0..m-1`` (or ``linspace(0, 1, m)`` with
  ``normalize_t``); term ``i`` (int) is ``t**i``, ``"sqrt"`` / ``"exp"`` are those functions of
  t, all in ``term_dtype``; ``fit[t] = sum_j term_j(t) * coeff_j``. A bin code ``q`` dequantises
  to ``(q - 2**(bits-1)) * scale`` (``(2q - 1) * scale`` for 1-bit codes); bins fill the first
  residual slots in order, the rest are 0. ``values = concat(exact, fit + residual)``; with
  ``delta_encoding`` the stored values are differences and the log-probs are their running sum,
  rounded to ``exact_dtype``.

The arithmetic follows DistillKit's decoder step by step in torch (same dtypes at each step), so
decoded values match what DistillKit itself trains on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from logitcache.errors import ConfigError

DTYPES = {
    "float16": (torch.float16, 16),
    "bfloat16": (torch.bfloat16, 16),
    "float32": (torch.float32, 32),
    "float64": (torch.float64, 64),
}
SPECIAL_TERMS = ("sqrt", "exp")


def _dtype(name: Any, what: str) -> str:
    if name not in DTYPES:
        raise ConfigError(f"{what}={name!r} is not one of {sorted(DTYPES)}")
    return str(name)


@dataclass(frozen=True, kw_only=True)
class ResidualBin:
    scale_dtype: str
    element_bits: int
    num_elements: int

    def __post_init__(self) -> None:
        _dtype(self.scale_dtype, "residual_bins[].scale_dtype")
        if not 1 <= int(self.element_bits) <= 64:
            raise ConfigError(f"residual_bins[].element_bits={self.element_bits} must be 1..64")
        if int(self.num_elements) < 1:
            raise ConfigError(f"residual_bins[].num_elements={self.num_elements} must be >= 1")

    @property
    def nbytes(self) -> int:
        return DTYPES[self.scale_dtype][1] // 8 + math.ceil(
            self.num_elements * self.element_bits / 8
        )


@dataclass(frozen=True, kw_only=True)
class DistillKitConfig:
    """DistillKit's ``DistributionQuantizationConfig`` (the ``compression_config.yaml``)."""

    d: int
    k: int
    exact_k: int
    exact_dtype: str = "float32"
    polynomial_terms: tuple = ()
    term_dtype: str = "float32"
    residual_bins: tuple[ResidualBin, ...] = field(default_factory=tuple)
    delta_encoding: bool = True
    error_diffusion: bool = False
    normalize_t: bool = False

    def __post_init__(self) -> None:
        if int(self.d) < 1 or int(self.k) < 1 or int(self.exact_k) < 0:
            raise ConfigError(
                f"d={self.d}, k={self.k}, exact_k={self.exact_k}: d and k must be >= 1, exact_k >= 0"
            )
        if self.k < self.exact_k:
            raise ConfigError(f"k={self.k} must be >= exact_k={self.exact_k}")
        _dtype(self.exact_dtype, "exact_dtype")
        _dtype(self.term_dtype, "term_dtype")
        for t in self.polynomial_terms:
            if not (isinstance(t, int) and not isinstance(t, bool)) and t not in SPECIAL_TERMS:
                raise ConfigError(
                    f"polynomial_terms entry {t!r} must be an integer power or one of {SPECIAL_TERMS}"
                )
        if self.exact_k < self.k and not self.polynomial_terms and not self.residual_bins:
            raise ConfigError(
                "exact_k < k needs polynomial_terms or residual_bins to approximate the rest"
            )
        if sum(b.num_elements for b in self.residual_bins) > self.k - self.exact_k:
            raise ConfigError("residual_bins hold more elements than k - exact_k")

    # -- (de)serialisation ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, where: str = "compression_config.yaml") -> DistillKitConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"{where} is not a mapping of DistributionQuantizationConfig fields")
        if "legacy" in d or "polynomial_degree" in d:
            raise ConfigError(
                f"{where} is DistillKit's legacy logit compression; only "
                "DistributionQuantizationConfig (d, k, exact_k, ...) is supported"
            )
        missing = [key for key in ("d", "k", "exact_k") if key not in d]
        if missing:
            raise ConfigError(f"{where} lacks {missing}; it must give d, k and exact_k")
        known = {
            "d", "k", "exact_k", "exact_dtype", "polynomial_terms", "term_dtype",
            "residual_bins", "delta_encoding", "error_diffusion", "normalize_t",
        }  # fmt: skip
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        try:
            bins = tuple(ResidualBin(**dict(b)) for b in d.get("residual_bins") or [])
            terms = tuple(
                t if t in SPECIAL_TERMS else int(t) for t in d.get("polynomial_terms") or []
            )
            return cls(
                d=int(d["d"]),
                k=int(d["k"]),
                exact_k=int(d["exact_k"]),
                exact_dtype=str(d.get("exact_dtype", "float32")),
                polynomial_terms=terms,
                term_dtype=str(d.get("term_dtype", "float32")),
                residual_bins=bins,
                delta_encoding=bool(d.get("delta_encoding", True)),
                error_diffusion=bool(d.get("error_diffusion", False)),
                normalize_t=bool(d.get("normalize_t", False)),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise ConfigError(f"{where}: {exc}") from None
            raise ConfigError(f"{where}: malformed field ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "d": self.d,
            "k": self.k,
            "exact_k": self.exact_k,
            "exact_dtype": self.exact_dtype,
            "polynomial_terms": list(self.polynomial_terms),
            "term_dtype": self.term_dtype,
            "residual_bins": [
                {
                    "scale_dtype": b.scale_dtype,
                    "element_bits": b.element_bits,
                    "num_elements": b.num_elements,
                }
                for b in self.residual_bins
            ],  # fmt: skip
            "delta_encoding": self.delta_encoding,
            "error_diffusion": self.error_diffusion,
            "normalize_t": self.normalize_t,
        }

    # -- sizes ----------------------------------------------------------------------------
    @property
    def index_bits(self) -> int:
        """``ceil(log2(d))`` (DistillKit computes it in float32; exact for d < 2**24)."""
        return max(0, (self.d - 1).bit_length())

    @property
    def index_bytes(self) -> int:
        return math.ceil(self.k * self.index_bits / 8)

    @property
    def logprob_bytes(self) -> int:
        bits = self.exact_k * DTYPES[self.exact_dtype][1]
        bits += len(self.polynomial_terms) * DTYPES[self.term_dtype][1]
        bits += sum(8 * b.nbytes for b in self.residual_bins)
        return math.ceil(bits / 8)


def recommended_config(d: int, k: int = 128) -> DistillKitConfig:
    """DistillKit's recommended configuration ("used at Arcee for new captures"), with k capped
    at what the cache holds."""
    k = min(128, int(k))
    return DistillKitConfig(
        d=int(d),
        k=k,
        exact_k=min(16, k),
        exact_dtype="bfloat16",
        polynomial_terms=(0, 1, 2, 3, 4, "sqrt") if k > 16 else (),
        term_dtype="float32",
        residual_bins=(),
        delta_encoding=False,
        error_diffusion=False,
    )


# -- bit packing --------------------------------------------------------------------------
def unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """``[N, nbytes]`` uint8 -> ``[N, count]`` uint64: MSB-first ``bits``-bit fields."""
    n = data.shape[0]
    if bits == 0:
        return np.zeros((n, count), np.uint64)
    stream = np.unpackbits(data, axis=1)[:, : count * bits].reshape(n, count, bits)
    weights = (np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)
    return (stream.astype(np.uint64) * weights).sum(axis=2, dtype=np.uint64)


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """``[N, count]`` unsigned ints -> ``[N, ceil(count * bits / 8)]`` uint8, MSB first."""
    n, count = values.shape
    v = values.astype(np.uint64)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    stream = ((v[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8).reshape(n, count * bits)
    return np.packbits(stream, axis=1)[:, : math.ceil(count * bits / 8)]


# -- dtype helpers ------------------------------------------------------------------------
def _from_bytes(raw: np.ndarray, dtype: str, count: int) -> torch.Tensor:
    """``[N, count * width]`` little-endian bytes -> ``[N, count]`` tensor of ``dtype``."""
    tdtype, width = DTYPES[dtype]
    raw = np.ascontiguousarray(raw)
    t = torch.from_numpy(raw.copy()).view(tdtype)
    return t.reshape(raw.shape[0], count)


def _to_bytes(values: torch.Tensor, dtype: str) -> np.ndarray:
    tdtype, _ = DTYPES[dtype]
    v = values.to(tdtype).contiguous()
    return v.view(torch.uint8).reshape(v.shape[0], -1).numpy()


def _terms(cfg: DistillKitConfig, m: int) -> torch.Tensor:
    tdtype = DTYPES[cfg.term_dtype][0]
    if cfg.normalize_t:
        pts = torch.linspace(0, 1, steps=m, dtype=tdtype)
    else:
        pts = torch.arange(m, dtype=tdtype)
    cols = [pts**t if isinstance(t, int) else getattr(torch, t)(pts) for t in cfg.polynomial_terms]
    return torch.stack(cols, dim=-1)  # [m, terms]


# -- decode -------------------------------------------------------------------------------
def decode_indices(data: np.ndarray, cfg: DistillKitConfig) -> np.ndarray:
    """``[N, index_bytes]`` uint8 -> ``[N, k]`` int64 token ids."""
    return unpack_bits(data, cfg.index_bits, cfg.k).astype(np.int64)


def decode_logprobs(data: np.ndarray, cfg: DistillKitConfig) -> np.ndarray:
    """``[N, logprob_bytes]`` uint8 -> ``[N, k]`` float32 log-probs, as DistillKit decodes."""
    n = data.shape[0]
    out_dtype = DTYPES[cfg.exact_dtype][0]
    pos = 0
    width = DTYPES[cfg.exact_dtype][1] // 8
    if cfg.exact_k:
        exact = _from_bytes(data[:, : cfg.exact_k * width], cfg.exact_dtype, cfg.exact_k)
    else:
        exact = torch.zeros((n, 0), dtype=out_dtype)
    pos = cfg.exact_k * width
    coeffs = None
    if cfg.polynomial_terms:
        tw = DTYPES[cfg.term_dtype][1] // 8
        nt = len(cfg.polynomial_terms)
        coeffs = _from_bytes(data[:, pos : pos + nt * tw], cfg.term_dtype, nt)
        pos += nt * tw
    m = cfg.k - cfg.exact_k
    residuals = []
    for b in cfg.residual_bins:
        sw = DTYPES[b.scale_dtype][1] // 8
        scale = _from_bytes(data[:, pos : pos + sw], b.scale_dtype, 1)
        pos += sw
        nb = math.ceil(b.num_elements * b.element_bits / 8)
        codes = unpack_bits(data[:, pos : pos + nb], b.element_bits, b.num_elements)
        pos += nb
        codes_t = torch.from_numpy(codes.astype(np.int64))
        if b.element_bits == 1:
            residuals.append((codes_t.to(torch.float32) * 2.0 - 1.0) * scale)
        else:
            lo = -(2 ** (b.element_bits - 1))
            residuals.append((codes_t + lo).to(torch.float32) * scale)
    if residuals:
        residual = torch.cat(residuals, dim=-1)
        if residual.shape[-1] < m:
            residual = torch.nn.functional.pad(residual, (0, m - residual.shape[-1]))
    else:
        residual = torch.zeros((n, m), dtype=out_dtype)
    if coeffs is not None:
        fit = torch.sum(_terms(cfg, m).to(coeffs.dtype) * coeffs.unsqueeze(-2), dim=-1)
        approx = fit + residual.to(out_dtype)
    else:
        approx = residual.to(out_dtype)
    values = torch.cat([exact.to(out_dtype), approx], dim=-1)
    if cfg.delta_encoding:
        values = torch.cumsum(values.float(), dim=-1).to(out_dtype)
    return values.to(torch.float32).numpy()


# -- encode -------------------------------------------------------------------------------
def encode_positions(
    ids: np.ndarray, logprobs: np.ndarray, cfg: DistillKitConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``[N, >=k]`` ids and log-probs -> (indices bytes ``[N, index_bytes]``, log-prob bytes
    ``[N, logprob_bytes]``): the top ``cfg.k`` entries sorted most probable first, exact
    values, a least-squares polynomial fit of the rest and quantised residuals."""
    n = ids.shape[0]
    if ids.shape[1] < cfg.k:
        raise ConfigError(f"the cache holds {ids.shape[1]} ids per position; DistillKit k={cfg.k}")
    if n and int(ids.max()) >= cfg.d:
        raise ConfigError(f"token id {int(ids.max())} does not fit d={cfg.d}")
    lp = np.asarray(logprobs, np.float64)
    order = np.argsort(-lp, axis=1, kind="stable")[:, : cfg.k]
    ids = np.take_along_axis(ids, order, axis=1)
    lp = np.take_along_axis(lp, order, axis=1)
    # -inf (and absurdly small) log-probs would wreck the fit; below e^-100 nothing is lost
    lp = np.clip(lp, -100.0, 0.0)
    values = torch.from_numpy(lp)
    if cfg.delta_encoding:
        values = torch.cat([values[:, :1], values[:, 1:] - values[:, :-1]], dim=-1)
    chunks = [_to_bytes(values[:, : cfg.exact_k], cfg.exact_dtype)] if cfg.exact_k else []
    m = cfg.k - cfg.exact_k
    rest = values[:, cfg.exact_k : cfg.k]
    if cfg.polynomial_terms and m > 0:
        x = _terms(cfg, m).to(torch.float64)  # [m, terms]
        coeffs = rest @ torch.linalg.pinv(x).T  # least squares, [n, terms]
        stored = coeffs.to(DTYPES[cfg.term_dtype][0])
        chunks.append(_to_bytes(stored, cfg.term_dtype))
        fit = (x.to(stored.dtype) * stored.unsqueeze(-2)).sum(-1).to(torch.float64)
        rest = rest - fit
    start = 0
    for b in cfg.residual_bins:
        part = rest[:, start : start + b.num_elements]
        start += b.num_elements
        top = 1.0 if b.element_bits == 1 else float(2 ** (b.element_bits - 1))
        peak = part.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(peak == 0, torch.ones_like(peak), peak / top)
        scale = scale.to(DTYPES[b.scale_dtype][0]).to(torch.float64)
        if b.element_bits == 1:
            codes = (part >= 0).to(torch.int64)
        else:
            lo, hi = -(2 ** (b.element_bits - 1)), 2 ** (b.element_bits - 1) - 1
            codes = torch.round(part / scale).clamp(lo, hi).to(torch.int64) - lo
        chunks.append(_to_bytes(scale, b.scale_dtype))
        chunks.append(pack_bits(codes.numpy().astype(np.uint64), b.element_bits))
    lp_bytes = (np.concatenate(chunks, axis=1) if chunks else np.zeros((n, 0), np.uint8)).astype(
        np.uint8
    )
    pad = cfg.logprob_bytes - lp_bytes.shape[1]
    if pad:
        lp_bytes = np.pad(lp_bytes, ((0, 0), (0, pad)))
    return pack_bits(ids.astype(np.uint64), cfg.index_bits), lp_bytes
