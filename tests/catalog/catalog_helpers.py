"""A catalog build driven through the real format writer, with simulated teacher units.

``catalog_build`` does what ``logitcache build --catalog`` does around the capture stages:
prepare_build -> (reuse | open_writer, compute missing units, commit, finish) -> index.
"""

from __future__ import annotations

from collections.abc import Mapping

from logitcache.catalog import prepare_build
from logitcache.codecs import CodecContext, get_codec
from logitcache.format import Manifest, write_shard
from logitcache.format.lease import LeaseConfig
from logitcache.format.shard import encode_table

CTX = CodecContext(vocab_size=300, top_k=4, rs_samples=0)


def header(fingerprint: str, *, top_k: int = 4, source: str = "/models/tiny") -> Manifest:
    return Manifest(
        teacher={
            "name": "tiny-random",
            "source": source,
            "revision": None,
            "weights_sha256": "ab" * 32,
            "dtype": "float32",
            "backend": "transformers",
        },
        tokenizer={"name": source, "vocab_size": CTX.vocab_size, "vocab_sha256": "cd" * 32},
        capture={"top_k": top_k, "rs_samples": 0, "seq_len": 16, "packing": "pack"},
        codec=get_codec("raw").describe(),
        corpus={"fingerprint": fingerprint, "sources": ["corpus/a.jsonl"], "max_tokens": None},
    )


def make_units(sample_factory, names) -> dict[str, list[dict]]:
    """Deterministic samples per unit name (the same name always yields the same samples)."""
    return {
        name: sample_factory(CTX, lengths=(6, 9), seed=int(name.split("-")[1]), prefix=name)
        for name in names
    }


def catalog_build(
    root: str,
    units: Mapping[str, list[dict]],
    fingerprint: str,
    *,
    lease: LeaseConfig | None = None,
    storage_options=None,
    on_commit=None,
):
    """Returns (target, names of the units this call computed)."""
    h = header(fingerprint)
    target = prepare_build(root, h, storage_options, lease=lease)
    if target.reuse_complete:
        return target, []
    computed = []
    codec = get_codec("raw")
    with target:
        writer = target.open_writer(h)
        for name, samples in units.items():
            if name in writer.committed_units:
                continue
            computed.append(name)
            writer.commit([write_shard(writer.store, name, encode_table(samples, codec, CTX))])
            if on_commit is not None:
                on_commit(name)
        target.finish(writer.finish())
    return target, computed
