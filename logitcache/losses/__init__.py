"""Sparse knowledge-distillation losses over cached teacher targets.

No loss here builds a dense ``[B, T, V]`` teacher tensor: the teacher is its top-k log-probs
plus a tail bucket (or its sampled draws), and the student is gathered at those ids.
:func:`fused_loss` goes further and takes the student's final hidden states and output
weight, so no ``[N, V]`` student logits exist either. See docs/training.md.
"""

from logitcache.lazy import lazy_attributes
from logitcache.losses.config import LOSS_IMPLS, LOSSES, LossConfig

# The loss math needs torch; it is imported on first use, so configs and `--help` stay light.
__getattr__ = lazy_attributes(
    __name__,
    {
        "LOG_ZERO": "buckets",
        "student_buckets": "buckets",
        "teacher_buckets": "buckets",
        "compute_loss": "compute",
        "cross_entropy": "divergences",
        "jsd": "divergences",
        "kl": "divergences",
        "kl_tail": "divergences",
        "kl_topk": "divergences",
        "reverse_kl": "divergences",
        "rs_kd": "divergences",
        "default_chunk_size": "fused",
        "fused_loss": "fused",
        "fused_position_metrics": "fused",
    },
)


__all__ = [
    "LOG_ZERO",
    "LOSSES",
    "LOSS_IMPLS",
    "LossConfig",
    "compute_loss",
    "cross_entropy",
    "default_chunk_size",
    "fused_loss",
    "fused_position_metrics",
    "jsd",
    "kl",
    "kl_tail",
    "kl_topk",
    "reverse_kl",
    "rs_kd",
    "student_buckets",
    "teacher_buckets",
]
