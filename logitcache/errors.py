"""Exception types: each subclasses the builtin a caller would expect, and carries a message
that names the input at fault and how to fix it."""

from __future__ import annotations


class LogitCacheError(Exception):
    """Base of every error logitcache raises on purpose."""


class ConfigError(LogitCacheError, ValueError):
    """A configuration value is invalid (e.g. ``top_k=0`` without sampled draws)."""


class CacheNotFoundError(LogitCacheError, FileNotFoundError):
    """No manifest at the given cache URI."""


class ManifestError(LogitCacheError, ValueError):
    """A manifest is unreadable, malformed, or unsafe (e.g. a shard path leaving the root)."""


class FormatVersionError(ManifestError):
    """The cache was written by a newer format version than this reader understands."""


class CorruptShardError(LogitCacheError, IOError):
    """A shard's bytes do not match its recorded checksum, schema or row count."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(
            f"shard {path!r} is corrupt: {problem}. Run `logitcache verify` on the cache; "
            "rebuild the shard by deleting it from the manifest and re-running the same build, "
            "or read with skip_bad_shards=True to continue without it."
        )


class IncompatibleCacheError(LogitCacheError, ValueError):
    """A re-run into an existing cache with different teacher, tokenizer or capture settings."""


class CodecError(LogitCacheError, ValueError):
    """Unknown codec name, bad codec parameters, or input a codec cannot encode."""


class StorageError(LogitCacheError, OSError):
    """A storage operation failed after retries, or a URI cannot be handled."""


class WriteConflictError(StorageError, FileExistsError):
    """A conditional write lost: another writer created or changed the file first."""


class CorpusError(LogitCacheError, ValueError):
    """The corpus is empty, unreadable, or lacks the requested field."""


class TeacherError(LogitCacheError, ValueError):
    """The teacher cannot be resolved or loaded."""


class VocabularyMismatchError(LogitCacheError, ValueError):
    """A student's tokenizer or vocabulary does not match the cache's."""


class LeaseHeldError(LogitCacheError, RuntimeError):
    """Another builder holds the write lease on this cache."""


class LeaseLostError(LeaseHeldError):
    """This builder's write lease expired and another builder took it over: stop writing."""


class LoaderStateError(LogitCacheError, ValueError):
    """A loader resume state does not fit this cache or this ranks x workers layout."""


class JobError(LogitCacheError, RuntimeError):
    """A Ray job could not be submitted, reached, or followed."""
