"""``TrainConfig``: everything one training run needs, checked before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from logitcache.errors import ConfigError
from logitcache.fields import coerce_section, option
from logitcache.losses import LossConfig
from logitcache.storage import STORAGE_OPTIONS_HELP


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

    cache: str = option(help="cache URI (local path, s3://, ...)")
    student: str = option("tiny", help="preset (tiny, small) or a path / hub id (default tiny)")
    out: str = option(help="run directory: checkpoint, metrics, student/")
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int | None = option(None, group="length", help="optimizer steps")
    epochs: int | None = option(
        None, group="length", help="passes over the train split (default 1)"
    )
    lr: float = option(1e-3, help="peak learning rate (AdamW)")
    min_lr_ratio: float = 0.1
    warmup: int = option(50, help="linear warmup steps, then cosine decay")
    weight_decay: float = option(0.1, help="AdamW weight decay")
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    batch_size: int = option(8, help="sequences per micro-batch per rank")
    grad_accum: int = option(1, help="micro-batches per optimizer step")
    # A crop of the cached rows, not the cache's row length: hence --crop-len (its old name
    # --seq-len still works).
    max_seq_len: int | None = option(
        None,
        flag="--crop-len",
        aliases=("--seq-len",),
        metavar="N",
        help="crop cached rows to their first N positions (default: whole rows)",
    )
    eval_every: int = option(100, help="evaluate on the held-out split every N steps")
    eval_batches: int | None = option(50, help="held-out batches per evaluation")
    checkpoint_every: int | None = option(None, help="default: --eval-every")
    log_every: int = 10
    heldout_fraction: float = option(0.05, help="share of sequences held out for evaluation")
    seed: int = option(0, help="data order and initialisation seed")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N")
    num_workers: int = option(1, help="DataLoader workers per rank")
    storage_options: str | dict[str, Any] | None = option(
        None, metavar="JSON", help=STORAGE_OPTIONS_HELP
    )
    resume: bool = option(False, help="continue from OUT/checkpoint.pt")
    stop_after: int | None = option(
        None, metavar="N", help="checkpoint and stop after N steps of this run"
    )
    cross_tokenizer: str | None = option(
        None,
        choices=("uld", "gold"),
        help="the student (--student DIR) has its own tokenizer: ULD or GOLD-hybrid KD on "
        "aligned positions plus its own CE (docs/cross-tokenizer.md)",
    )
    teacher_tokenizer: str | None = option(
        None,
        metavar="PATH",
        help="tokenizer that spells the cached ids (default: the manifest's teacher)",
    )

    def __post_init__(self) -> None:
        coerce_section(self, "loss", LossConfig)
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
