"""The trainer's own checkpoint: model, optimizer, scheduler, loader state, step, RNG states.

It is written with ``torch.save`` but holds only tensors, state dicts and plain Python values,
so it loads with ``torch.load(weights_only=True)``: reading a checkpoint never runs code.
(Cache content is never pickled at all; this file is the trainer's private state.) Written to a
temporary name and renamed, so a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import torch

from logitcache.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: str, state: dict[str, Any]) -> str:
    path = os.path.join(out_dir, CHECKPOINT_NAME)
    tmp = path + ".tmp"
    torch.save({"version": CHECKPOINT_VERSION, **state}, tmp)
    os.replace(tmp, path)
    log.info("checkpoint at step %d -> %s", state["step"], path)
    return path


def load_checkpoint(out_dir: str) -> dict[str, Any]:
    path = os.path.join(out_dir, CHECKPOINT_NAME)
    if not os.path.exists(path):
        raise ConfigError(
            f"--resume: no checkpoint at {path}; run without --resume to start fresh, or point "
            "--out at the directory of the run to continue"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(
            f"{path} has checkpoint version {state.get('version')}, expected "
            f"{CHECKPOINT_VERSION}; resume with the logitcache version that wrote it"
        )
    return state
