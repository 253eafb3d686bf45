"""The sections of a cache-writing config, shared by ``build`` and ``generate``.

A write config is a composition of these keyword-only sections, each validated once, in its
own ``__post_init__``: :class:`TeacherOptions` (which teacher, how it runs),
:class:`LabelOptions` (what is stored per position), :class:`RunOptions` (how the run is
scheduled), :class:`OutputOptions` (where it writes) and, for ``build``,
:class:`PackingOptions` (how the corpus is read and cut into rows). Every field carries its
command-line flag (:func:`logitcache.fields.option`), so the CLI's options, defaults and help
come from here and nowhere else. Messages name the flag, since that is how most users set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from logitcache.corpus import FORMATS, INVALID_UTF8_MODES, PACKING_MODES
from logitcache.errors import ConfigError
from logitcache.fields import check_choices, option
from logitcache.storage import STORAGE_OPTIONS_HELP
from logitcache.teachers.config import DTYPES, check_label_counts

PROGRESS_MODES = ("auto", "bar", "log", "off")


@dataclass(kw_only=True)
class TeacherOptions:
    """Which teacher, on which backend, dtype and device, and the size of one replica."""

    model: str = option(flag="--teacher", help="hub id, local directory, FILE.gguf or smollm2-135m")
    backend: str = option("transformers", help="transformers (default) or vllm")
    dtype: str = option("auto", choices=DTYPES, help="teacher compute dtype")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N")
    trust_remote_code: bool = option(False, help="allow the teacher repository's own code to run")
    revision: str | None = option(None, help="hub revision (branch, tag or commit) of the teacher")
    gpus_per_teacher: int = option(
        1,
        metavar="N",
        help="GPUs per teacher replica, tensor parallel within one node (--workers counts replicas)",
    )
    pipeline_parallel: int = option(
        1,
        metavar="M",
        help="pipeline stages per replica, each of --gpus-per-teacher GPUs (vLLM: across nodes)",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        self.model = str(self.model) if self.model else ""
        if not self.model:
            raise ConfigError("no teacher: pass --teacher HUB_ID|DIR|FILE.gguf|smollm2-135m")
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

    def loader_config(self, max_batch_tokens: int):
        """The :class:`~logitcache.teachers.TeacherConfig` that loads this teacher."""
        from logitcache.teachers import TeacherConfig

        return TeacherConfig(
            teacher=self.model,
            backend=self.backend,
            dtype=self.dtype,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            revision=self.revision,
            max_batch_tokens=max_batch_tokens,
            tensor_parallel=self.gpus_per_teacher,
            pipeline_parallel=self.pipeline_parallel,
        )


@dataclass(kw_only=True)
class LabelOptions:
    """The soft labels stored per position: top-k entries, sampled draws, and their codec."""

    top_k: int = option(64, help="top-k entries stored per position (0: draws only)")
    rs_samples: int = option(0, metavar="N", help="sampled draws per position (RS-KD)")
    codec: str | None = option(None, help="codec spec, e.g. raw (default: the library default)")

    def __post_init__(self) -> None:
        check_label_counts(self.top_k, self.rs_samples)


@dataclass(kw_only=True)
class PackingOptions:
    """How ``build`` reads the corpus and cuts it into rows and units. Together with the
    corpus content these decide the corpus fingerprint (the catalog's ``find`` uses them)."""

    seq_len: int = option(2048, help="tokens per row")
    max_tokens: int | None = option(
        None, metavar="N", help="stop after N corpus tokens (deterministic)"
    )
    mode: str = option(
        "pack",
        flag="--packing",
        choices=PACKING_MODES,
        help="pack documents with EOS between them, or one document per row",
    )
    unit_tokens: int = option(65536, help="tokens per work unit (= per shard)")
    text_field: str = option("text", help="JSONL field / Parquet column holding the text")
    format: str = option("auto", choices=FORMATS, help="corpus format (auto: by file suffix)")
    invalid_utf8: str = option(
        "skip",
        choices=INVALID_UTF8_MODES,
        help="a document with invalid UTF-8: skip it (default; counted) or keep it with U+FFFD",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.seq_len < 2:
            raise ConfigError(f"--seq-len {self.seq_len}: rows need at least 2 tokens")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ConfigError(f"--max-tokens {self.max_tokens}: must be >= 2, or omitted")
        if self.unit_tokens < 1:
            raise ConfigError(f"--unit-tokens {self.unit_tokens}: must be >= 1")
        if not self.text_field:
            raise ConfigError("--text-field must name a JSONL field or Parquet column")

    def planner_config(self, eos_id: int | None):
        """The unit planner's :class:`~logitcache.corpus.PackingConfig`."""
        from logitcache.corpus import PackingConfig

        return PackingConfig(
            seq_len=self.seq_len,
            packing=self.mode,
            eos_id=eos_id,
            unit_tokens=self.unit_tokens,
            max_tokens=self.max_tokens,
        )


@dataclass(kw_only=True)
class RunOptions:
    """How a run is scheduled: replicas, Ray or not, batch size, progress and the lease."""

    workers: int = option(
        1, help="teacher replicas (each of --gpus-per-teacher GPUs when GPUs exist)"
    )
    use_ray: bool = option(
        True,
        negate="--no-ray",
        help="run in this process without Ray (same stages, no parallelism)",
    )
    ray_address: str | None = option(
        None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)"
    )
    threads: int | None = option(
        None, help="torch threads per CPU worker (default: cores / workers)"
    )
    # 4096: the fastest batch of the idle sweep (docs/capture.md); a GPU teacher may raise it
    batch_tokens: int = option(
        4096, help="padded tokens per teacher forward (generate: prompt + response tokens)"
    )
    progress: str = option("auto", choices=PROGRESS_MODES, help="progress display")
    log_interval_s: float = 15.0  # progress log lines (no flag)
    wait_lease: float = option(
        0.0,
        metavar="SECONDS",
        help="if another builder is writing the same cache, wait this long for it (default: "
        "refuse at once)",
    )
    lease_ttl: float = option(
        120.0,
        metavar="SECONDS",
        help="write lease lifetime; a crashed builder's cache is taken over after this long",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: need at least one teacher worker")
        if self.batch_tokens < 1:
            raise ConfigError(f"--batch-tokens {self.batch_tokens}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: must be >= 1")
        if self.ray_address and not self.use_ray:
            raise ConfigError("--ray-address and --no-ray contradict each other; drop one")
        if self.wait_lease < 0 or self.lease_ttl <= 0:
            raise ConfigError("--wait-lease must be >= 0 and --lease-ttl > 0 (seconds)")

    def lease(self):
        """The cache write lease of this run."""
        from logitcache.format.lease import LeaseConfig

        return LeaseConfig(ttl_s=self.lease_ttl, wait_s=self.wait_lease)


@dataclass(kw_only=True)
class OutputOptions:
    """Where the cache goes: a plain ``out`` URI or a shared ``catalog`` root (one of them;
    the command decides which it needs), and the fsspec options for both."""

    out: str | None = option(
        None, help="cache URI (local path, s3://, memory://, ...); or --catalog"
    )
    catalog: str | None = option(
        None,
        metavar="ROOT",
        help="shared cache catalog root (e.g. s3://bucket/logitcache): reuse a complete "
        "matching cache, extend it when the corpus grew, or build it under ROOT/caches/<key>",
    )
    storage_options: dict[str, Any] | str | None = option(
        None,
        metavar="JSON",
        help=STORAGE_OPTIONS_HELP,
    )

    def __post_init__(self) -> None:
        self.out = str(self.out) if self.out else None
        self.catalog = str(self.catalog) if self.catalog else None
        if self.out and self.catalog:
            raise ConfigError(
                "--out and --catalog both name where the cache goes; pass one (with --catalog "
                "the cache lives at ROOT/caches/<key>)"
            )
