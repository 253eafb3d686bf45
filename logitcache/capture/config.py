"""``CaptureConfig``: everything one ``logitcache build`` run needs, checked up front.

:class:`WriteConfig` holds what ``build`` and ``generate`` share (teacher, soft labels,
scheduling, output options) and checks it once; each command's config adds its own fields.

The CLI, the Ray job entrypoint (pipelines/build_cache.py) and Python callers all build this one
object, so a bad value fails before any model is loaded, with a message naming the flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logitcache.corpus import FORMATS, INVALID_UTF8_MODES, PACKING_MODES
from logitcache.errors import ConfigError
from logitcache.teachers.config import DTYPES

PROGRESS_MODES = ("auto", "bar", "log", "off")


@dataclass(kw_only=True)
class WriteConfig:
    """What every cache-writing run (``build``, ``generate``) sets: the teacher, the soft
    labels, how the run is scheduled and where it writes. Validated here, once, for both."""

    teacher: str
    top_k: int = 64
    rs_samples: int = 0
    workers: int = 1
    gpus_per_teacher: int = 1
    pipeline_parallel: int = 1
    backend: str = "transformers"
    dtype: str = "auto"
    device: str = "auto"
    batch_tokens: int = 8192
    codec: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    storage_options: dict[str, Any] | str | None = None
    use_ray: bool = True
    ray_address: str | None = None
    threads: int | None = None
    progress: str = "auto"
    log_interval_s: float = 15.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.teacher = str(self.teacher) if self.teacher else ""
        if not self.teacher:
            raise ConfigError("no teacher: pass --teacher HUB_ID|DIR|FILE.gguf|smollm2-135m")
        check_label_counts(self.top_k, self.rs_samples)
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: need at least one teacher worker")
        for flag, value in (
            ("--gpus-per-teacher", self.gpus_per_teacher),
            ("--pipeline-parallel", self.pipeline_parallel),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag} {value!r}: must be an integer >= 1")
        if self.device == "cpu" and self.gpus_per_teacher * self.pipeline_parallel > 1:
            raise ConfigError(
                "--device cpu with --gpus-per-teacher/--pipeline-parallel > 1: a replica of "
                "several GPUs needs GPUs; drop one of them"
            )
        if self.batch_tokens < 1:
            raise ConfigError(f"--batch-tokens {self.batch_tokens}: must be >= 1")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.progress not in PROGRESS_MODES:
            raise ConfigError(
                f"progress={self.progress!r}: choose one of {', '.join(PROGRESS_MODES)}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: must be >= 1")
        if self.ray_address and not self.use_ray:
            raise ConfigError("--ray-address and --no-ray contradict each other; drop one")

    # -- what a run builds from this config -------------------------------------------------
    def teacher_config(self):
        """The :class:`~logitcache.teachers.TeacherConfig` (a forward never exceeds the
        larger of the token budget and the longest row)."""
        from logitcache.teachers import TeacherConfig

        return TeacherConfig(
            teacher=self.teacher,
            backend=self.backend,
            dtype=self.dtype,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            revision=self.revision,
            max_batch_tokens=max(self.batch_tokens, self.seq_len),
            tensor_parallel=self.gpus_per_teacher,
            pipeline_parallel=self.pipeline_parallel,
        )

    def score_stage(self, factory: type | None = None, options: dict[str, Any] | None = None):
        """The picklable recipe of this run's scorer (``factory``: capture's Scorer)."""
        from logitcache.capture.stages import Scorer, ScoreStage

        return ScoreStage(
            teacher=self.teacher_config(),
            top_k=self.top_k,
            rs_samples=self.rs_samples,
            batch_tokens=self.batch_tokens,
            threads=self.threads,
            factory=factory or Scorer,
            options=dict(options or {}),
        )

    def executor(self):
        """The executor this run schedules on, chosen here once (local or Ray)."""
        from logitcache.capture.executors import make_executor
        from logitcache.capture.placement import replica_spec

        return make_executor(
            use_ray=self.use_ray,
            workers=self.workers,
            device=self.device,
            threads=self.threads,
            ray_address=self.ray_address,
            replica=replica_spec(self),
        )


def check_label_counts(top_k: int, rs_samples: int) -> None:
    """The k / draws rule of the CLI (against the vocabulary: ``teachers.check_score_args``)."""
    if top_k < 0:
        raise ConfigError(f"--top-k {top_k}: must be >= 0")
    if rs_samples < 0:
        raise ConfigError(f"--rs-samples {rs_samples}: must be >= 0")
    if top_k == 0 and rs_samples == 0:
        raise ConfigError(
            "--top-k 0 needs --rs-samples N: with neither top-k entries nor sampled draws "
            "there is nothing to store"
        )


@dataclass(kw_only=True)
class CaptureConfig(WriteConfig):
    """A build: teacher x corpus -> cache at ``out``. Field names match the CLI flags."""

    corpus: list[str]
    out: str | None = None
    seq_len: int = 2048
    max_tokens: int | None = None
    text_field: str = "text"
    format: str = "auto"
    invalid_utf8: str = "skip"
    packing: str = "pack"
    unit_tokens: int = 65536
    catalog: str | None = None
    wait_lease: float = 0.0
    lease_ttl: float = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.corpus, str):
            self.corpus = [self.corpus]
        self.corpus = [str(c) for c in self.corpus]
        self.out = str(self.out) if self.out else None
        if not self.corpus:
            raise ConfigError("no corpus: pass --corpus PATH_OR_URI [...] (globs allowed)")
        if not self.out and not self.catalog:
            raise ConfigError("no output: pass --out CACHE_URI or --catalog ROOT")
        if self.out and self.catalog:
            raise ConfigError(
                "--out and --catalog both name where the cache goes; pass one (with --catalog "
                "the cache lives at ROOT/caches/<key>)"
            )
        if self.wait_lease < 0 or self.lease_ttl <= 0:
            raise ConfigError("--wait-lease must be >= 0 and --lease-ttl > 0 (seconds)")
        if self.seq_len < 2:
            raise ConfigError(f"--seq-len {self.seq_len}: rows need at least 2 tokens")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ConfigError(f"--max-tokens {self.max_tokens}: must be >= 2, or omitted")
        if self.unit_tokens < 1:
            raise ConfigError(f"--unit-tokens {self.unit_tokens}: must be >= 1")
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r}: choose one of {', '.join(FORMATS)}")
        if self.invalid_utf8 not in INVALID_UTF8_MODES:
            raise ConfigError(
                f"--invalid-utf8 {self.invalid_utf8!r}: choose one of "
                f"{', '.join(INVALID_UTF8_MODES)}"
            )
        if self.packing not in PACKING_MODES:
            raise ConfigError(
                f"--packing {self.packing!r}: choose one of {', '.join(PACKING_MODES)}"
            )
        if not self.text_field:
            raise ConfigError("--text-field must name a JSONL field or Parquet column")

    def capture_section(self) -> dict[str, Any]:
        """The manifest's ``capture`` section: what a resumed run must match exactly."""
        return {
            "top_k": self.top_k,
            "rs_samples": self.rs_samples,
            "seq_len": self.seq_len,
            "packing": self.packing,
            "alignment": "next-token",
            "temperature": 1.0,
            "unit_tokens": self.unit_tokens,
        }
