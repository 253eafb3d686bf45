"""``TeacherConfig``: which teacher, on which backend, device and dtype."""

from __future__ import annotations

import re
from dataclasses import dataclass

from logitcache.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")
# How a backend runs a replica of several GPUs (``replica_layout`` on the teacher class): all
# GPUs in the teacher's own process, or engine workers of its own that it schedules with Ray.
IN_PROCESS = "in-process"
RAY_WORKERS = "ray-workers"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True, kw_only=True)
class TeacherConfig:
    """How to load a teacher. ``teacher`` is a hub id, a local directory, a ``.gguf`` file or
    ``smollm2-135m`` (see :mod:`logitcache.teachers.resolve`).

    ``dtype="auto"`` means bfloat16 on a CUDA device that supports it, else float32 (GGUF
    weights are always dequantised to float32 by transformers). ``max_batch_tokens`` bounds the
    padded tokens of one forward pass; longer lists of rows are split.

    ``tensor_parallel`` x ``pipeline_parallel`` is the replica's GPU count: vLLM gets them as
    ``tensor_parallel_size`` / ``pipeline_parallel_size``; transformers spreads the model over
    that many visible GPUs with ``device_map="auto"``. ``backend`` is a registered name or a
    dotted ``"package.module:Class"`` path to a teacher class of your own.
    """

    teacher: str
    backend: str = "transformers"
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    revision: str | None = None
    attn_implementation: str = "sdpa"
    max_batch_tokens: int = 16384
    tensor_parallel: int = 1
    pipeline_parallel: int = 1

    def __post_init__(self):
        from logitcache.teachers import BACKENDS

        if not isinstance(self.teacher, str) or not self.teacher.strip():
            raise ConfigError(
                "TeacherConfig.teacher is empty: give a hub id, a local directory, a .gguf "
                "file or 'smollm2-135m'."
            )
        if self.backend not in BACKENDS and ":" not in str(self.backend):
            raise ConfigError(
                f"unknown teacher backend {self.backend!r}; choose one of {sorted(BACKENDS)} "
                "or give a 'package.module:Class' path."
            )
        for name in ("tensor_parallel", "pipeline_parallel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"TeacherConfig.{name}={value!r} must be an integer >= 1.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}.")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ConfigError(
                f"unknown device {self.device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
            )
        if not isinstance(self.trust_remote_code, bool):
            raise ConfigError("TeacherConfig.trust_remote_code must be True or False.")
        if not isinstance(self.max_batch_tokens, int) or self.max_batch_tokens < 1:
            raise ConfigError(
                f"max_batch_tokens={self.max_batch_tokens!r} must be a positive integer "
                "(padded tokens per forward pass)."
            )


def check_label_counts(
    top_k: int, rs_samples: int, vocab_size: int | None = None, *, error: type = ConfigError
) -> None:
    """The one rule for what a position stores: ``top_k >= 0`` entries and ``rs_samples >= 0``
    draws, not both zero, and (once the teacher is known) ``top_k`` within its vocabulary.

    Configs check it without a vocabulary, the driver and every backend's ``score`` with it,
    and a codec with ``error=CodecError``.
    """
    for flag, value in (("--top-k", top_k), ("--rs-samples", rs_samples)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{flag} {value!r}: must be an integer >= 0")
        if value < 0:
            raise error(f"{flag} {value}: must be >= 0")
    if top_k == 0 and rs_samples == 0:
        raise error(
            "--top-k 0 needs --rs-samples N (top_k=0 needs rs_samples > 0): with neither "
            "top-k entries nor sampled draws there is nothing to store"
        )
    if vocab_size is not None and top_k > vocab_size:
        raise error(
            f"top_k={top_k} exceeds the teacher's vocabulary ({vocab_size} logits); use "
            f"--top-k <= {vocab_size}."
        )
