"""Train a student from a cache: ``TrainConfig`` + ``train(cfg)``; the CLI and the Ray job
entrypoint are thin wrappers around these two."""

import importlib
from typing import Any

from logitcache.train.config import TrainConfig

# The loop and the student need torch and transformers: imported on first use.
_LAZY = {"train": "loop", "PRESETS": "student", "build_student": "student"}
_LAZY["check_vocabulary"] = "student"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PRESETS", "TrainConfig", "build_student", "check_vocabulary", "train"]
