"""``TrainConfig``: everything one training run needs, checked before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from logitcache.errors import ConfigError
from logitcache.losses import LossConfig


@dataclass(kw_only=True)
class TrainConfig:
    """One student training run from a cache.

    Length: ``steps`` optimizer steps, or ``epochs`` passes over the training split (neither:
    one epoch). An optimizer step consumes ``batch_size * grad_accum`` sequences per rank.
    ``stop_after`` ends this invocation after that many steps *with a checkpoint*, for
    time-sliced jobs; the schedule still follows ``steps``/``epochs``, and ``resume`` continues.

    ``cross_tokenizer`` (``uld`` | ``gold``) trains a student with its own tokenizer
    (``student`` = its directory): the KD term is ULD or the GOLD hybrid on aligned positions,
    mixed with the student's own CE by ``loss.alpha`` (``loss.kind="ce"``: CE only);
    ``teacher_tokenizer`` overrides the tokenizer that spells the cached ids
    (docs/cross-tokenizer.md).
    """

    cache: str
    student: str = "tiny"
    out: str
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int | None = None
    epochs: int | None = None
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int | None = None
    eval_every: int = 100
    eval_batches: int | None = 50
    checkpoint_every: int | None = None
    log_every: int = 10
    heldout_fraction: float = 0.05
    seed: int = 0
    device: str = "auto"
    num_workers: int = 1
    storage_options: str | dict[str, Any] | None = None
    resume: bool = False
    stop_after: int | None = None
    cross_tokenizer: str | None = None
    teacher_tokenizer: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = LossConfig(**self.loss)
        self._check_cross_tokenizer()
        self.betas = tuple(self.betas)
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give --steps N or --epochs N, not both")
        if self.steps is None and self.epochs is None:
            self.epochs = 1
        for name in ("steps", "epochs", "stop_after", "checkpoint_every", "eval_batches"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be a positive integer or unset, got {value}")
        for name in ("batch_size", "grad_accum", "eval_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            raise ConfigError(
                f"max_seq_len must be >= 2 (or unset for full rows), got {self.max_seq_len}"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup < 0 or self.num_workers < 0:
            raise ConfigError("warmup and num_workers must be >= 0")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(
                f"heldout_fraction must be in (0, 1) (the share of sequences kept for "
                f"evaluation), got {self.heldout_fraction}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.checkpoint_every is None:
            self.checkpoint_every = self.eval_every

    def _check_cross_tokenizer(self) -> None:
        if self.cross_tokenizer is None:
            if self.teacher_tokenizer is not None:
                raise ConfigError("teacher_tokenizer is used only with --cross-tokenizer uld|gold")
            return
        from logitcache.train.cross_tokenizer import check_method

        check_method(self.cross_tokenizer, self.loss)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (JSON- and ``torch.load(weights_only=True)``-safe)."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        if d["storage_options"] is not None:
            d["storage_options"] = "<redacted>"  # may hold credentials: never persisted
        return d
