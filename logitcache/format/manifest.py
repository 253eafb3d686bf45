"""The manifest: the single source of truth about what a cache holds.

It is JSON (readable by anything), written last and replaced atomically, so a shard exists
for readers exactly when the manifest lists it. Sections are plain dicts so that new,
optional fields can be added without a format bump; the fields readers rely on are checked
in :func:`Manifest.from_dict`.

The manifest carries a checksum of its own canonical content (``checksum``: sha256 of the
manifest without that field, as compact JSON with sorted keys; docs/format.md), so a flipped
byte in any field -- teacher name, stats, a shard entry -- is detected when it is read.
Manifests written before the checksum existed still open; :attr:`Manifest.integrity` says
``"unchecked"`` and readers log a note.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from logitcache.errors import FormatVersionError, ManifestError
from logitcache.format.version import ALIGNMENT, FORMAT_VERSION
from logitcache.storage import check_relative

log = logging.getLogger(__name__)

CHECKSUM_FIELD = "checksum"
CHECKSUM_PREFIX = "sha256:"
_CHECKSUM_VALUE = re.compile(r"^sha256:[0-9a-f]{64}$")

# Sections whose equality decides whether a re-run may resume into an existing cache.
IDENTITY_SECTIONS = ("teacher", "tokenizer", "capture", "codec")


@dataclass
class ShardInfo:
    """One committed shard: where it is, what is in it, and how to check it."""

    path: str
    unit: str
    rows: int
    tokens: int
    bytes: int
    sha256: str

    def __post_init__(self) -> None:
        check_relative(self.path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardInfo:
        try:
            return cls(
                path=str(d["path"]),
                unit=str(d["unit"]),
                rows=int(d["rows"]),
                tokens=int(d["tokens"]),
                bytes=int(d["bytes"]),
                sha256=str(d["sha256"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed shard entry {d!r}: {exc}") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """Parsed manifest. Also indexable like a dict: ``manifest["teacher"]["name"]``."""

    teacher: dict[str, Any]
    tokenizer: dict[str, Any]
    capture: dict[str, Any]
    codec: dict[str, Any]
    corpus: dict[str, Any] = field(default_factory=dict)
    shards: list[ShardInfo] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    status: str = "building"
    format_version: int = FORMAT_VERSION
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    logitcache_version: str = ""
    # How the content was checked when read: "verified" (its checksum matched), "unchecked"
    # (written before manifests had one), or "new" (built here, not read). Not serialised.
    integrity: str = field(default="new", compare=False)

    def __post_init__(self) -> None:
        self.capture.setdefault("alignment", ALIGNMENT)
        if not self.logitcache_version:
            from logitcache import __version__

            self.logitcache_version = __version__

    def __getitem__(self, key: str) -> Any:
        if key not in self.to_dict():
            raise KeyError(key)
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    # -- derived ---------------------------------------------------------------------------
    @property
    def top_k(self) -> int:
        return int(self.capture.get("top_k", 0))

    @property
    def rs_samples(self) -> int:
        return int(self.capture.get("rs_samples", 0))

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer["vocab_size"])

    @property
    def num_sequences(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def num_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def committed_units(self) -> set[str]:
        return {s.unit for s in self.shards}

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in IDENTITY_SECTIONS}

    def diff_identity(self, other: Manifest) -> list[str]:
        """Human-readable differences in the sections that must match to resume."""
        return _diff(self.identity(), other.identity(), "")

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        order = [
            "format_version",
            "status",
            "created_at",
            "updated_at",
            "logitcache_version",
            "teacher",
            "tokenizer",
            "capture",
            "corpus",
            "codec",
            "stats",
            "extra",
            "shards",
        ]
        return {k: d[k] for k in order}

    def to_json(self) -> bytes:
        """The manifest file: its fields, then ``checksum`` over their canonical content."""
        d = self.to_dict()
        d[CHECKSUM_FIELD] = content_checksum(d)
        return (json.dumps(d, indent=1, sort_keys=False) + "\n").encode()

    @classmethod
    def from_dict(cls, d: Any, where: str = "manifest") -> Manifest:
        if not isinstance(d, dict):
            raise ManifestError(f"{where} is not a JSON object")
        version = d.get("format_version")
        if not isinstance(version, int):
            raise ManifestError(
                f"{where} has no integer format_version; is this a logitcache cache?"
            )
        if version > FORMAT_VERSION:
            raise FormatVersionError(
                f"{where} has format_version {version}, newer than {FORMAT_VERSION} which this "
                "logitcache understands; upgrade logitcache (pip install -U logitcache)."
            )
        integrity = check_integrity(d, where)
        for section in ("teacher", "tokenizer", "capture", "codec"):
            if not isinstance(d.get(section), dict):
                raise ManifestError(f"{where} lacks the {section!r} section")
        if "vocab_size" not in d["tokenizer"]:
            raise ManifestError(f"{where}: tokenizer.vocab_size is missing")
        if "spec" not in d["codec"]:
            raise ManifestError(f"{where}: codec.spec is missing")
        shards = [ShardInfo.from_dict(s) for s in d.get("shards", [])]
        seen: set[str] = set()
        for s in shards:
            if s.unit in seen:
                raise ManifestError(f"{where} lists unit {s.unit!r} twice")
            seen.add(s.unit)
        return cls(
            teacher=d["teacher"],
            tokenizer=d["tokenizer"],
            capture=d["capture"],
            codec=d["codec"],
            corpus=d.get("corpus", {}),
            shards=shards,
            stats=d.get("stats", {}),
            extra=d.get("extra", {}),
            status=str(d.get("status", "building")),
            format_version=version,
            created_at=str(d.get("created_at", "")),
            updated_at=str(d.get("updated_at", "")),
            logitcache_version=str(d.get("logitcache_version", "")),
            integrity=integrity,
        )

    @classmethod
    def from_json(cls, data: bytes, where: str = "manifest") -> Manifest:
        try:
            parsed = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(
                f"{where} is not valid JSON ({exc}); it may be truncated or corrupted. "
                "Restore it from a copy, or rebuild the cache."
            ) from None
        return cls.from_dict(parsed, where)


def canonical_json(d: dict[str, Any]) -> bytes:
    """The canonical bytes of a manifest's content: every field but ``checksum``, as JSON with
    sorted keys, no whitespace, ASCII only (``\\uXXXX`` escapes, lowercase hex)."""
    content = {k: v for k, v in d.items() if k != CHECKSUM_FIELD}
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def content_checksum(d: dict[str, Any]) -> str:
    return CHECKSUM_PREFIX + hashlib.sha256(canonical_json(d)).hexdigest()


def check_integrity(d: dict[str, Any], where: str) -> str:
    """``"verified"`` if the manifest's checksum matches its content, ``"unchecked"`` if it has
    none (written before manifests carried one); else raise :class:`ManifestError`."""
    recorded = d.get(CHECKSUM_FIELD)
    if recorded is None:
        damaged = [k for k, v in d.items() if isinstance(v, str) and _CHECKSUM_VALUE.match(v)]
        if damaged:  # the checksum is there under a changed name: the key itself was hit
            raise ManifestError(
                f"{where}: its checksum is stored under the key {damaged[0]!r} instead of "
                f"{CHECKSUM_FIELD!r}: the manifest was corrupted after it was written. Restore "
                "it from a copy, or rebuild the cache."
            )
        log.info(
            "%s has no checksum (written by logitcache %s, before manifests carried one): its "
            "descriptive fields are not integrity-checked; shards still are, by their sha256",
            where,
            d.get("logitcache_version") or "?",
        )
        return "unchecked"
    try:
        actual = content_checksum(d)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{where}: content cannot be checksummed ({exc})") from None
    if recorded != actual:
        raise ManifestError(
            f"{where} does not match its checksum ({str(recorded)[:19]}... recorded, "
            f"{actual[:19]}... computed): the manifest was changed or corrupted after it was "
            "written. Restore it from a copy, or rebuild the cache; if you edited it by hand, "
            "delete the 'checksum' field to open it unchecked."
        )
    return "verified"


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            name = f"{prefix}.{key}" if prefix else key
            if key not in a:
                out.append(f"{name}: absent in cache, {b[key]!r} requested")
            elif key not in b:
                out.append(f"{name}: {a[key]!r} in cache, absent in request")
            else:
                out.extend(_diff(a[key], b[key], name))
        return out
    return [] if a == b else [f"{prefix}: {a!r} in cache, {b!r} requested"]
