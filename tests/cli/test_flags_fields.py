"""Every CLI flag of build, generate and train maps to a config field and back, with the same
default: the config dataclasses are the one source of names and defaults.

A flag maps to the field of its argparse ``dest``: a field of the config, or of one of its
nested config dataclasses (``--temperature`` -> ``generation.temperature``), or an entry of
``ALIASES``. A new field with a flag of the same name passes without editing this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import typing

import pytest

# flag dest -> config field path, where the names differ on purpose.
ALIASES = {
    "build": {"no_ray": "use_ray"},
    "generate": {"no_ray": "use_ray"},
    "train": {
        "loss": "loss.kind",
        "loss_chunk": "loss.chunk_size",
        "loss_impl": "loss.impl",
        "crop_len": "max_seq_len",
    },
}
# Fields set by Python callers only (no flag), per command.
NO_FLAG = {
    "build": {"extra", "log_interval_s"},
    "generate": {"extra", "log_interval_s"},
    "train": {"min_lr_ratio", "betas", "grad_clip", "log_every"},
}
# Flags that steer the CLI itself, not a config field.
CLI_ONLY = {"build": set(), "generate": set(), "train": set()}
CONFIGS = {
    "build": ("logitcache.capture.config", "CaptureConfig"),
    "generate": ("logitcache.generate.config", "GenerateConfig"),
    "train": ("logitcache.train.config", "TrainConfig"),
}


def _leaves(cls, prefix: str = "") -> dict[str, dataclasses.Field]:
    """field path -> Field, descending into fields whose default is a config dataclass."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        typ = hints.get(f.name)
        nested = typ if dataclasses.is_dataclass(typ) else None
        if nested is None and f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            nested = type(made) if dataclasses.is_dataclass(made) else None
        if nested is not None:
            out.update(_leaves(nested, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return dataclasses.MISSING


def _actions(command: str) -> list[argparse.Action]:
    p = argparse.ArgumentParser()
    importlib.import_module(f"logitcache.cli.{command}").add_parser(p)
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


def _mapping(command: str):
    module, name = CONFIGS[command]
    leaves = _leaves(getattr(importlib.import_module(module), name))
    by_leaf_name: dict[str, list[str]] = {}
    for path in leaves:
        by_leaf_name.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    mapped = {}
    for action in _actions(command):
        dest = action.dest
        if dest in CLI_ONLY[command]:
            continue
        path = ALIASES[command].get(dest)
        if path is None:
            path = dest if dest in leaves else None
        if path is None and len(by_leaf_name.get(dest, [])) == 1:
            path = by_leaf_name[dest][0]
        mapped[dest] = (action, path)
    return leaves, mapped


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_flag_is_a_config_field(command):
    leaves, mapped = _mapping(command)
    unmapped = sorted(d for d, (_, path) in mapped.items() if path not in leaves)
    assert not unmapped, f"{command}: flags without a config field: {unmapped}"


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_config_field_has_a_flag(command):
    leaves, mapped = _mapping(command)
    flagged = {path for _, path in mapped.values() if path}
    missing = sorted(p for p in leaves if p not in flagged and p not in NO_FLAG[command])
    assert not missing, f"{command}: config fields without a flag: {missing}"


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_flag_defaults_are_the_config_defaults(command):
    leaves, mapped = _mapping(command)
    wrong = {}
    for dest, (action, path) in mapped.items():
        if path not in leaves or action.required:
            continue
        field_default = _default(leaves[path])
        if field_default is dataclasses.MISSING:
            continue
        flag_default = action.default
        if flag_default is None and field_default is not None:
            continue  # None: "not given", the config (or a rule in it) decides
        if dest == "no_ray":  # --no-ray stores the negation of use_ray
            flag_default = not flag_default
        if flag_default != field_default:
            wrong[dest] = (flag_default, field_default)
    assert not wrong, f"{command}: flag default != config default: {wrong}"
