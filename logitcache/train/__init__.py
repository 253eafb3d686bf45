"""Train a student from a cache: ``TrainConfig`` + ``train(cfg)``; the CLI and the Ray job
entrypoint are thin wrappers around these two."""

from logitcache.train.config import TrainConfig
from logitcache.train.loop import train
from logitcache.train.student import PRESETS, build_student, check_vocabulary

__all__ = ["PRESETS", "TrainConfig", "build_student", "check_vocabulary", "train"]
