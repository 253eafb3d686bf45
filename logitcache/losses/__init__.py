"""Sparse knowledge-distillation losses over cached teacher targets.

No loss here builds a dense ``[B, T, V]`` teacher tensor: the teacher is its top-k log-probs
plus a tail bucket (or its sampled draws), and the student is gathered at those ids.
:func:`fused_loss` goes further and takes the student's final hidden states and output
weight, so no ``[N, V]`` student logits exist either. See docs/training.md.
"""

from logitcache.losses.buckets import LOG_ZERO, student_buckets, teacher_buckets
from logitcache.losses.compute import LOSS_IMPLS, LOSSES, LossConfig, compute_loss
from logitcache.losses.divergences import (
    cross_entropy,
    jsd,
    kl,
    kl_tail,
    kl_topk,
    reverse_kl,
    rs_kd,
)
from logitcache.losses.fused import default_chunk_size, fused_loss, fused_position_metrics

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
