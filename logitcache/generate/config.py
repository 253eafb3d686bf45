"""``GenerateConfig``: one ``logitcache generate`` run, checked before any model is loaded.

The generation parameters (:meth:`GenerateConfig.generation_section`) go into the manifest's
``capture`` section, which decides whether a re-run may resume a cache: the same command
resumes, a different temperature, seed or ``n`` is refused instead of mixing two datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logitcache.capture.config import DTYPES, PROGRESS_MODES
from logitcache.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class GenerationParams:
    """How the teacher samples responses. ``temperature=0`` is greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens {self.max_new_tokens}: must be >= 1")
        if not self.temperature >= 0:
            raise ConfigError(f"--temperature {self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p {self.top_p}: must be in (0, 1] (1 = no nucleus cut)")
        if self.n < 1:
            raise ConfigError(f"--n {self.n}: need at least one response per prompt")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed {self.seed!r}: must be an integer >= 0")

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "n": self.n,
            "seed": self.seed,
        }


@dataclass(kw_only=True)
class GenerateConfig:
    """A generation run: teacher x prompts -> cache at ``out``. Field names match the flags."""

    teacher: str
    prompts: list[str]
    out: str
    generation: GenerationParams = field(default_factory=GenerationParams)
    top_k: int = 64
    rs_samples: int = 0
    max_prompt_tokens: int = 1024
    prompts_per_unit: int = 64
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
    export_jsonl: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.generation, dict):
            self.generation = GenerationParams(**self.generation)
        if isinstance(self.prompts, str):
            self.prompts = [self.prompts]
        self.prompts = [str(p) for p in self.prompts]
        self.out = str(self.out)
        self.teacher = str(self.teacher) if self.teacher else ""
        if not self.teacher:
            raise ConfigError("no teacher: pass --teacher HUB_ID|DIR|FILE.gguf|smollm2-135m")
        if not self.prompts:
            raise ConfigError("no prompts: pass --prompts PATH_OR_URI (JSONL, globs allowed)")
        if not self.out:
            raise ConfigError("no output: pass --out CACHE_URI")
        if self.top_k < 0 or self.rs_samples < 0:
            raise ConfigError("--top-k and --rs-samples must be >= 0")
        if self.top_k == 0 and self.rs_samples == 0:
            raise ConfigError(
                "--top-k 0 needs --rs-samples N: with neither top-k entries nor sampled draws "
                "there is nothing to store"
            )
        if self.max_prompt_tokens < 1:
            raise ConfigError(f"--max-prompt-tokens {self.max_prompt_tokens}: must be >= 1")
        if self.prompts_per_unit < 1:
            raise ConfigError(f"--prompts-per-unit {self.prompts_per_unit}: must be >= 1")
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

    @property
    def seq_len(self) -> int:
        """Longest possible row: the prompt budget plus the response budget."""
        return self.max_prompt_tokens + self.generation.max_new_tokens

    def capture_section(self) -> dict[str, Any]:
        """The manifest's ``capture`` section: what a resumed run must match exactly."""
        return {
            "top_k": self.top_k,
            "rs_samples": self.rs_samples,
            "seq_len": self.seq_len,
            "packing": "document",
            "alignment": "next-token",
            "temperature": 1.0,
            "source": "generate",
            "generation": {
                **self.generation.as_dict(),
                "max_prompt_tokens": self.max_prompt_tokens,
            },
        }
