"""Convert a GGUF teacher once to a save_pretrained directory, and reuse it.

transformers re-parses the whole GGUF file (49k tokenizer strings as memmap slices) for each of
config, tokenizer and model, and dequantises the weights on every load: about 20-60 s for the
135M SmolLM2 file on 2 cores, paid again by every Ray worker and every test session. The
converted directory (config, tokenizer, fp32 safetensors) loads in about a second.

The directory is keyed by the GGUF file's sha256 and the transformers version (which defines
the dequantisation), lives under ``$LOGITCACHE_HOME/gguf`` (default ``~/.cache/logitcache``),
and is written to a temporary name and renamed, so concurrent workers never see a partial one.
Set ``LOGITCACHE_GGUF_CACHE=0`` to load straight from the GGUF file every time. The teacher's
identity still names and hashes the GGUF file itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from logitcache.teachers.identity import file_sha256

log = logging.getLogger(__name__)
_lock = threading.Lock()
_COMPLETE = "logitcache-complete"


def cache_root() -> Path:
    home = os.environ.get("LOGITCACHE_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "logitcache"
    )
    return Path(home) / "gguf"


def enabled() -> bool:
    return os.environ.get("LOGITCACHE_GGUF_CACHE", "1").strip().lower() not in ("0", "false", "no")


def converted_dir(gguf_dir: str, gguf_file: str) -> Path:
    """The save_pretrained directory equivalent to ``gguf_dir/gguf_file``, converting it on
    first use. Raises whatever transformers raises when the file cannot be converted."""
    import transformers

    digest = file_sha256(os.path.join(gguf_dir, gguf_file))
    target = cache_root() / f"{digest[:32]}-tf{transformers.__version__}"
    if (target / _COMPLETE).is_file():
        return target
    with _lock:
        if (target / _COMPLETE).is_file():
            return target
        _convert(gguf_dir, gguf_file, target)
    return target


def _convert(gguf_dir: str, gguf_file: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s once to %s (GGUF loads are slow)", gguf_file, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=gguf_file, dtype=torch.float32
        )
        # The weights are already dequantised to plain fp32 tensors; only the GGUF quantizer
        # marker stops save_pretrained, so drop it.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tok.save_pretrained(tmp)
        model.save_pretrained(tmp)
        (tmp / _COMPLETE).write_text(gguf_file + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _COMPLETE).is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
