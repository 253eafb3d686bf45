"""What the manifest records about a teacher and its tokenizer.

Two caches are comparable only if the same weights and the same vocabulary produced them, so
identity is content-based: ``weights_sha256`` hashes the weight files themselves (a re-saved or
re-quantised model gets a new digest even under the same name), and ``vocab_sha256`` hashes the
token strings in id order. Hashing a multi-GB checkpoint takes seconds, so digests are cached
in-process keyed by (path, size, mtime): loading the same teacher twice hashes it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CHUNK = 8 << 20
_digest_cache: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()
_COMMIT = re.compile(r"/snapshots/([0-9a-f]{40})(/|$)")


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of one file, streamed in chunks; cached by (real path, size, mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _digest_lock:
        cached = _digest_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _digest_lock:
        _digest_cache[key] = digest
    return digest


def weight_files(directory: str | os.PathLike, gguf_file: str | None = None) -> list[Path]:
    """The files whose bytes define the teacher: the GGUF file, else the weight files of a
    save_pretrained directory (safetensors preferred over .bin, as transformers loads them)."""
    d = Path(directory)
    if gguf_file:
        return [d / gguf_file]
    for suffixes in ((".safetensors",), (".bin", ".pt", ".pth")):
        files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in suffixes)
        if files:
            return files
    return []


def weights_sha256(directory: str | os.PathLike, gguf_file: str | None = None) -> str | None:
    """One digest over the weight files (sorted by name): sha256 of ``name:digest`` lines, so a
    single-file checkpoint and its per-file digest differ only by that framing. None when the
    directory holds no weight files (e.g. weights fetched lazily by a remote-code model)."""
    files = weight_files(directory, gguf_file)
    if not files:
        log.warning("no weight files found in %s; weights_sha256 is None", directory)
        return None
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{p.name}:{file_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def hub_commit(local_path: str | os.PathLike) -> str | None:
    """The hub commit hash encoded in a hub-cache snapshot path, if it is one."""
    m = _COMMIT.search(Path(local_path).as_posix())
    return m.group(1) if m else None


def teacher_identity(
    *,
    name: str,
    source: str,
    weights_dir: str | os.PathLike,
    gguf_file: str | None,
    revision: str | None,
    dtype: str,
    backend: str,
) -> dict[str, Any]:
    """The manifest's ``teacher`` section. ``source`` is a local path or hub id (never a URL
    with credentials); ``revision`` the hub commit when known."""
    return {
        "name": name,
        "source": source,
        "gguf_file": gguf_file,
        "revision": revision,
        "weights_sha256": weights_sha256(weights_dir, gguf_file),
        "dtype": dtype,
        "backend": backend,
    }


def vocab_tokens(tokenizer: Any) -> list[str]:
    """Token strings ordered by id (gaps, if any, as empty strings)."""
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1 if vocab else 0
    tokens = [""] * size
    for token, idx in vocab.items():
        tokens[idx] = token
    return tokens


def vocab_sha256(tokenizer: Any) -> str:
    """sha256 of ``json.dumps`` of the token strings ordered by id."""
    return hashlib.sha256(json.dumps(vocab_tokens(tokenizer)).encode("utf-8")).hexdigest()


def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: hash them all, in name order
        return json.dumps(template, sort_keys=True)
    return template or None


def tokenizer_identity(tokenizer: Any, logits_width: int) -> dict[str, Any]:
    """The manifest's ``tokenizer`` section. ``vocab_size`` is the teacher's logits width (the
    support of the stored distributions), which may exceed ``tokenizer_size = len(tokenizer)``."""
    template = _chat_template(tokenizer)
    return {
        "name": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
        "vocab_size": int(logits_width),
        "tokenizer_size": len(tokenizer),
        "vocab_sha256": vocab_sha256(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "chat_template_sha256": (
            hashlib.sha256(template.encode("utf-8")).hexdigest() if template else None
        ),
    }
