"""Codec registry, keyed by name. A spec string ``name:key=value,...`` builds a codec.

The default, ``lc1``, was chosen by measurement (docs/benchmarks.md): 3.6x smaller than
``raw`` at k=64 with <= 1e-3 nat of KL added, and it decodes at millions of tokens/s; ``raw`` is
the lossless reference. Without a calibrated rank table (``Codec.calibrate``) lc1 uses ranks=id,
which is valid everywhere and ~25% larger on ids.
"""

from __future__ import annotations

from logitcache.codecs.base import Codec, CodecContext, PayloadBatch
from logitcache.codecs.lc1 import Lc1Codec
from logitcache.codecs.raw import RawCodec
from logitcache.errors import CodecError

_REGISTRY: dict[str, type[Codec]] = {RawCodec.name: RawCodec, Lc1Codec.name: Lc1Codec}
DEFAULT_CODEC = "lc1"


def register(cls: type[Codec]) -> type[Codec]:
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    return sorted(_REGISTRY)


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def get_codec(spec: str | None = None) -> Codec:
    """Build a codec from ``name`` or ``name:key=value,...``."""
    spec = spec or DEFAULT_CODEC
    name, _, body = spec.partition(":")
    if name not in _REGISTRY:
        raise CodecError(f"unknown codec {name!r}; choose one of: {', '.join(available())}")
    params = {}
    if body:
        for item in body.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise CodecError(f"codec spec {spec!r}: expected key=value, got {item!r}")
            params[key.strip()] = _parse_value(value.strip())
    try:
        return _REGISTRY[name](**params)
    except TypeError as exc:
        raise CodecError(f"codec spec {spec!r}: {exc}") from None


__all__ = [
    "Codec",
    "CodecContext",
    "PayloadBatch",
    "available",
    "get_codec",
    "register",
    "DEFAULT_CODEC",
]
