"""Teachers: load a model once and turn token rows into cache payloads.

Backends are registered by name with a dotted path and loaded lazily, so an optional backend
(vLLM) costs nothing until asked for and, when missing, fails with its install hint::

    teacher = load_teacher(TeacherConfig(teacher="smollm2-135m"))
    payloads = teacher.score([ids], top_k=64, rs_samples=0, seeds=[0])

Every backend's teacher has ``identity`` (manifest ``teacher`` section), ``tokenizer``,
``vocab_size`` (logits width), ``device`` and ``score(...)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from logitcache.errors import TeacherError
from logitcache.teachers.config import IN_PROCESS, RAY_WORKERS, TeacherConfig, check_label_counts
from logitcache.teachers.identity import tokenizer_identity, vocab_sha256
from logitcache.teachers.resolve import locate_smollm2, resolve_teacher

BACKENDS: dict[str, str] = {
    "transformers": "logitcache.teachers.hf:HFTeacher",
    "vllm": "logitcache.teachers.vllm:VLLMTeacher",
}
INSTALL_HINTS: dict[str, str] = {"vllm": "pip install logitcache[vllm]"}
# How each registered backend runs a replica of several GPUs, known without importing it (the
# driver of a Ray job need not have vLLM installed); a dotted-path backend says so itself.
REPLICA_LAYOUTS: dict[str, str] = {"transformers": IN_PROCESS, "vllm": RAY_WORKERS}

__all__ = [
    "BACKENDS",
    "IN_PROCESS",
    "RAY_WORKERS",
    "TeacherConfig",
    "check_label_counts",
    "describe_teacher",
    "get_backend",
    "load_teacher",
    "load_tokenizer",
    "locate_smollm2",
    "replica_layout",
    "resolve_teacher",
    "tokenizer_identity",
    "vocab_sha256",
]


def get_backend(name: str) -> type:
    """The teacher class registered as ``name`` (or at the dotted path ``"module:Class"``),
    imported on first use."""
    target = BACKENDS.get(name) or (name if ":" in name else None)
    if target is None:
        raise TeacherError(
            f"unknown teacher backend {name!r}; choose one of {sorted(BACKENDS)} or give a "
            "'package.module:Class' path."
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = INSTALL_HINTS.get(name, "")
        raise TeacherError(
            f"teacher backend {name!r} is not available ({exc})"
            + (f"; install it with `{hint}`." if hint else ".")
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TeacherError(f"teacher backend {name!r}: {module_name} has no {attr!r}.") from None


def replica_layout(name: str) -> str:
    """How backend ``name`` runs a replica of several GPUs (a dotted-path class: its
    ``replica_layout`` attribute, else :data:`IN_PROCESS`)."""
    if name in REPLICA_LAYOUTS:
        return REPLICA_LAYOUTS[name]
    return getattr(get_backend(name), "replica_layout", IN_PROCESS)


def load_teacher(cfg: TeacherConfig) -> Any:
    """Load the teacher ``cfg`` names on its backend (weights included: the expensive call)."""
    return get_backend(cfg.backend)(cfg)


def load_tokenizer(cfg: TeacherConfig) -> Any:
    """The teacher's tokenizer, without loading weights (every backend uses the HF one)."""
    from logitcache.teachers.hf import load_hf_tokenizer

    return load_hf_tokenizer(cfg)


def describe_teacher(cfg: TeacherConfig) -> dict[str, Any]:
    """``{"identity": ..., "vocab_size": ...}`` without loading weights, equal to what the
    loaded teacher reports when it runs on ``cfg.device`` as resolved on this machine."""
    backend = get_backend(cfg.backend)
    describe = getattr(backend, "describe", None)
    if describe is not None:
        return describe(cfg)
    from logitcache.teachers.hf import describe_hf

    return describe_hf(cfg)
