"""``CaptureConfig``: everything one ``logitcache build`` run needs, checked up front.

A write config is a composition of sections (:mod:`logitcache.capture.options`): ``teacher``,
``labels``, ``run`` and ``output``, shared with ``generate`` through :class:`WriteConfig`, and
build's own ``packing``. Each section checks its own fields once; the command configs check
only what spans sections or is theirs alone.

The CLI (flags generated from the sections' fields), the Ray job entrypoint
(pipelines/build_cache.py) and Python callers all build this one object, so a bad value fails
before any model is loaded, with a message naming the flag::

    CaptureConfig(
        corpus=["corpus/*.jsonl"],
        teacher=TeacherOptions(model="smollm2-135m"),
        labels=LabelOptions(top_k=32),
        packing=PackingOptions(seq_len=512),
        output=OutputOptions(out="s3://bucket/caches/smol"),
    )
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logitcache.capture.options import (
    LabelOptions,
    OutputOptions,
    PackingOptions,
    RunOptions,
    TeacherOptions,
)
from logitcache.errors import ConfigError
from logitcache.fields import coerce_section, option


@dataclass(kw_only=True)
class WriteConfig:
    """What every cache-writing run (``build``, ``generate``) sets: the teacher, the soft
    labels, how the run is scheduled and where it writes, one section each."""

    teacher: TeacherOptions
    labels: LabelOptions = field(default_factory=LabelOptions)
    run: RunOptions = field(default_factory=RunOptions)
    output: OutputOptions
    extra: dict[str, Any] = field(default_factory=dict)  # manifest ``extra`` (Python only)

    def __post_init__(self) -> None:
        for name, cls in (
            ("teacher", TeacherOptions),
            ("labels", LabelOptions),
            ("run", RunOptions),
            ("output", OutputOptions),
        ):
            coerce_section(self, name, cls)

    @property
    def seq_len(self) -> int:  # pragma: no cover - each command defines it
        raise NotImplementedError

    # -- what a run builds from this config -------------------------------------------------
    def teacher_config(self):
        """The :class:`~logitcache.teachers.TeacherConfig` (a forward never exceeds the
        larger of the token budget and the longest row)."""
        return self.teacher.loader_config(max(self.run.batch_tokens, self.seq_len))

    def score_stage(self, factory: type | None = None, options: dict[str, Any] | None = None):
        """The picklable recipe of this run's scorer (``factory``: capture's Scorer)."""
        from logitcache.capture.stages import Scorer, ScoreStage

        return ScoreStage(
            teacher=self.teacher_config(),
            top_k=self.labels.top_k,
            rs_samples=self.labels.rs_samples,
            batch_tokens=self.run.batch_tokens,
            threads=self.run.threads,
            factory=factory or Scorer,
            options=dict(options or {}),
        )

    def executor(self):
        """The executor this run schedules on, chosen here once (local or Ray)."""
        from logitcache.capture.executors import make_executor
        from logitcache.capture.placement import replica_spec

        return make_executor(
            use_ray=self.run.use_ray,
            workers=self.run.workers,
            device=self.teacher.device,
            threads=self.run.threads,
            ray_address=self.run.ray_address,
            replica=replica_spec(self.teacher),
        )


@dataclass(kw_only=True)
class CaptureConfig(WriteConfig):
    """A build: teacher x corpus -> cache at ``output.out`` (or under ``output.catalog``)."""

    corpus: list[str] = option(metavar="URI", help="files, globs, directories or fsspec URIs")
    packing: PackingOptions = field(default_factory=PackingOptions)

    def __post_init__(self) -> None:
        super().__post_init__()
        coerce_section(self, "packing", PackingOptions)
        if isinstance(self.corpus, str):
            self.corpus = [self.corpus]
        self.corpus = [str(c) for c in self.corpus]
        if not self.corpus:
            raise ConfigError("no corpus: pass --corpus PATH_OR_URI [...] (globs allowed)")
        if not self.output.out and not self.output.catalog:
            raise ConfigError("no output: pass --out CACHE_URI or --catalog ROOT")

    @property
    def seq_len(self) -> int:
        return self.packing.seq_len

    def capture_section(self) -> dict[str, Any]:
        """The manifest's ``capture`` section: what a resumed run must match exactly."""
        return {
            "top_k": self.labels.top_k,
            "rs_samples": self.labels.rs_samples,
            "seq_len": self.packing.seq_len,
            "packing": self.packing.mode,
            "alignment": "next-token",
            "temperature": 1.0,
            "unit_tokens": self.packing.unit_tokens,
        }
