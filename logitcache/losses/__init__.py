"""Sparse knowledge-distillation losses over cached teacher targets.

No loss here builds a dense ``[B, T, V]`` teacher tensor: the teacher is its top-k log-probs
plus a tail bucket (or its sampled draws), and the student is gathered at those ids. See
docs/training.md for the formulas.
"""

from logitcache.losses.buckets import LOG_ZERO, student_buckets, teacher_buckets
from logitcache.losses.compute import LOSSES, LossConfig, compute_loss
from logitcache.losses.divergences import (
    cross_entropy,
    jsd,
    kl,
    kl_tail,
    kl_topk,
    reverse_kl,
    rs_kd,
)

__all__ = [
    "LOG_ZERO",
    "LOSSES",
    "LossConfig",
    "compute_loss",
    "cross_entropy",
    "jsd",
    "kl",
    "kl_tail",
    "kl_topk",
    "reverse_kl",
    "rs_kd",
    "student_buckets",
    "teacher_buckets",
]
