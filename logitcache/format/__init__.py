"""The cache format: manifest, shard schema, commit protocol, reader and verifier.

docs/format.md is the specification; this package is its reference implementation.
"""

from logitcache.format.manifest import Manifest, ShardInfo
from logitcache.format.reader import Cache, open_cache
from logitcache.format.verify import VerifyReport, verify_cache
from logitcache.format.version import FORMAT_VERSION
from logitcache.format.writer import CacheWriter, read_manifest, write_shard

__all__ = [
    "FORMAT_VERSION",
    "Cache",
    "CacheWriter",
    "Manifest",
    "ShardInfo",
    "VerifyReport",
    "open_cache",
    "read_manifest",
    "verify_cache",
    "write_shard",
]
