"""``LossConfig``: which loss, how it is tempered and mixed. Torch-free, so configs and the
CLI's ``--help`` load without importing torch; the math is in :mod:`.compute` and :mod:`.fused`.
"""

from __future__ import annotations

from dataclasses import dataclass

from logitcache.errors import ConfigError
from logitcache.fields import option


@dataclass(frozen=True)
class LossKind:
    """A registered loss: what it reads from the batch, and whether T^2 scaling applies."""

    needs: str  # "topk" | "rs" | "labels"
    tempered: bool
    help: str


LOSSES: dict[str, LossKind] = {
    "kl_tail": LossKind("topk", True, "forward KL over top-k + tail bucket (default)"),
    "kl_topk": LossKind("topk", True, "forward KL renormalised on the top-k (tail dropped)"),
    "reverse_kl": LossKind("topk", True, "reverse KL(student||teacher) over top-k + tail"),
    "jsd": LossKind("topk", True, "generalised JSD with --beta over top-k + tail"),
    "rs_kd": LossKind("rs", False, "Random-Sampling KD: cross-entropy to the stored draws"),
    "ce": LossKind("labels", False, "hard-label cross-entropy only (no teacher)"),
}


LOSS_IMPLS = ("fused", "dense")


@dataclass(kw_only=True, frozen=True)
class LossConfig:
    """Which loss, and how it is tempered and mixed.

    ``loss = (1 - alpha) * T^2 * KD + alpha * CE`` (Hinton et al. 2015); for ``ce`` the loss is
    CE alone. ``beta`` is used by ``jsd`` only. ``chunk_size`` bounds loss memory (positions
    per chunk; None = all at once for ``compute_loss``, a cache-sized default for the fused
    path). ``impl`` is how the trainer computes it: ``fused`` (output layer + loss chunk by
    chunk, :func:`logitcache.losses.fused_loss`, no ``[N, V]`` logits) or ``dense`` (the
    model's logits, then :func:`compute_loss`); both give the same loss and gradients.
    """

    kind: str = option("kl_tail", flag="--loss", choices=tuple(LOSSES), help="KD loss")
    temperature: float = option(1.0, help="KD temperature (T^2-scaled)")
    alpha: float = option(
        0.0,
        unset_is_none=True,
        help="weight of hard-label cross-entropy (default 0; 0.5 with --cross-tokenizer)",
    )
    beta: float = option(0.5, help="JSD mixture weight (--loss jsd)")
    chunk_size: int | None = option(
        None, flag="--loss-chunk", metavar="N", help="positions per loss chunk (memory cap)"
    )
    impl: str = option(
        "fused",
        flag="--loss-impl",
        choices=LOSS_IMPLS,
        help="fused: output layer + loss chunk by chunk, no [B, T, V] logits (default); "
        "dense: the model's logits, then the loss",
    )

    def __post_init__(self) -> None:
        if self.kind not in LOSSES:
            raise ConfigError(
                f"unknown loss {self.kind!r}; choose one of: {', '.join(LOSSES)} "
                "(see docs/training.md)"
            )
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}; 1.0 = as stored")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(
                f"alpha must be in [0, 1] (weight of hard-label CE), got {self.alpha}"
            )
        if not 0.0 < self.beta < 1.0:
            raise ConfigError(f"beta must be in (0, 1) for the generalised JSD, got {self.beta}")
        if self.kind == "rs_kd" and self.temperature != 1.0:
            raise ConfigError(
                "rs_kd uses draws made from the teacher at T=1; they cannot be re-tempered. "
                "Use --temperature 1 with rs_kd, or a top-k loss (kl_tail) to temper."
            )
        if self.impl not in LOSS_IMPLS:
            raise ConfigError(
                f"unknown loss implementation {self.impl!r}; choose one of: "
                f"{', '.join(LOSS_IMPLS)} (--loss-impl; see docs/training.md)"
            )
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise ConfigError(
                f"chunk_size must be a positive number of positions or None, got {self.chunk_size}"
            )

    @property
    def spec(self) -> LossKind:
        return LOSSES[self.kind]
