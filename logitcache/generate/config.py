"""``GenerateConfig``: one ``logitcache generate`` run, checked before any model is loaded.

The generation parameters (:meth:`GenerateConfig.generation_section`) go into the manifest's
``capture`` section, which decides whether a re-run may resume a cache: the same command
resumes, a different temperature, seed or ``n`` is refused instead of mixing two datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logitcache.capture.config import WriteConfig
from logitcache.errors import ConfigError
from logitcache.fields import coerce_section, option


@dataclass(frozen=True, kw_only=True)
class GenerationParams:
    """How the teacher samples responses. ``temperature=0`` is greedy decoding."""

    max_new_tokens: int = option(256, help="response length limit")
    temperature: float = option(1.0, help="sampling temperature (0: greedy)")
    top_p: float = option(1.0, help="nucleus sampling mass (1: off)")
    n: int = option(1, metavar="PER_PROMPT", help="responses per prompt")
    seed: int = option(0, help="sampling seed (same seed, same dataset)")

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
class GenerateConfig(WriteConfig):
    """A generation run: teacher x prompts -> cache at ``output.out``. The sections shared
    with ``build`` (and their checks) are :class:`WriteConfig`'s; the prompt budget and the
    generation parameters are generate's own."""

    prompts: list[str] = option(
        metavar="URI",
        help="JSONL of {'prompt': str} or {'messages': [...]} records (globs, fsspec URIs)",
    )
    generation: GenerationParams = field(default_factory=GenerationParams)
    max_prompt_tokens: int = option(1024, help="longer prompts are skipped (logged)")
    prompts_per_unit: int = option(64, help="prompts per work unit/shard")
    export_jsonl: str | None = option(
        None, metavar="PATH", help="also write prompt/response JSONL here"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        coerce_section(self, "generation", GenerationParams)
        if isinstance(self.prompts, str):
            self.prompts = [self.prompts]
        self.prompts = [str(p) for p in self.prompts]
        if not self.prompts:
            raise ConfigError("no prompts: pass --prompts PATH_OR_URI (JSONL, globs allowed)")
        if self.output.catalog:
            raise ConfigError(
                "generate writes to --out only; a catalog (--catalog) is for build's caches"
            )
        if not self.output.out:
            raise ConfigError("no output: pass --out CACHE_URI")
        if self.max_prompt_tokens < 1:
            raise ConfigError(f"--max-prompt-tokens {self.max_prompt_tokens}: must be >= 1")
        if self.prompts_per_unit < 1:
            raise ConfigError(f"--prompts-per-unit {self.prompts_per_unit}: must be >= 1")

    @property
    def seq_len(self) -> int:
        """Longest possible row: the prompt budget plus the response budget."""
        return self.max_prompt_tokens + self.generation.max_new_tokens

    def capture_section(self) -> dict[str, Any]:
        """The manifest's ``capture`` section: what a resumed run must match exactly."""
        return {
            "top_k": self.labels.top_k,
            "rs_samples": self.labels.rs_samples,
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
