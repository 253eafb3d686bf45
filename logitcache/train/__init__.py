"""Train a student from a cache: ``TrainConfig`` + ``train(cfg)``; the CLI and the Ray job
entrypoint are thin wrappers around these two."""

from logitcache.lazy import lazy_attributes
from logitcache.train.config import TrainConfig

# The loop and the student need torch and transformers: imported on first use.
__getattr__ = lazy_attributes(
    __name__,
    {
        "train": "loop",
        "PRESETS": "student",
        "build_student": "student",
        "check_vocabulary": "student",
    },
)


__all__ = ["PRESETS", "TrainConfig", "build_student", "check_vocabulary", "train"]
