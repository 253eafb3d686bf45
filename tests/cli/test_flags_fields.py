"""Every CLI flag of build, generate and train maps to a config field and back, with the same
default: the config dataclasses (and their nested sections) are the one source of names and
defaults.

A flag maps to the field of its argparse ``dest``: a field of the config or of one of its
sections (``--temperature`` -> ``generation.temperature``, ``--workers`` -> ``run.workers``),
or an entry of ``ALIASES``. The mapping is worked out here from names alone, independently of
the flag metadata the CLI generates its options from. A new field with a flag of the same name
passes without editing this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import typing

import pytest

# flag dest -> config field path, where the names differ on purpose.
_WRITE_ALIASES = {"no_ray": "run.use_ray", "teacher": "teacher.model"}
ALIASES = {
    "build": {**_WRITE_ALIASES, "packing": "packing.mode"},
    "generate": dict(_WRITE_ALIASES),
    "train": {
        "loss": "loss.kind",
        "loss_chunk": "loss.chunk_size",
        "loss_impl": "loss.impl",
        "crop_len": "max_seq_len",
    },
}
# Fields without a flag of this command (set by Python callers only), per command.
NO_FLAG = {
    "build": {"extra", "run.log_interval_s"},
    "generate": {"extra", "run.log_interval_s", "output.catalog"},
    "train": {"min_lr_ratio", "betas", "grad_clip", "log_every"},
}
CONFIGS = {
    "build": ("logitcache.capture.config", "CaptureConfig"),
    "generate": ("logitcache.generate.config", "GenerateConfig"),
    "train": ("logitcache.train.config", "TrainConfig"),
}
# The smallest valid command line of each command, and the same config built in Python.
REQUIRED_ARGV = {
    "build": ["--teacher", "t", "--corpus", "c.jsonl", "--out", "o"],
    "generate": ["--teacher", "t", "--prompts", "p.jsonl", "--out", "o"],
    "train": ["--cache", "c", "--out", "o"],
}
# Values for the round trip where "some other value of the type" would be refused.
VALUES = {"device": "cpu", "cross_tokenizer": "gold", "teacher_tokenizer": None}
# Flags that replace a required one (the cache goes to the catalog instead of --out).
REPLACES = {"catalog": "--out"}


def python_config(command: str):
    if command == "build":
        from logitcache.capture import CaptureConfig
        from logitcache.capture.options import OutputOptions, TeacherOptions

        return CaptureConfig(
            teacher=TeacherOptions(model="t"), corpus=["c.jsonl"], output=OutputOptions(out="o")
        )
    if command == "generate":
        from logitcache.capture.options import OutputOptions, TeacherOptions
        from logitcache.generate import GenerateConfig

        return GenerateConfig(
            teacher=TeacherOptions(model="t"), prompts=["p.jsonl"], output=OutputOptions(out="o")
        )
    from logitcache.train import TrainConfig

    return TrainConfig(cache="c", out="o")


def _leaves(cls, prefix: str = "") -> dict[str, tuple[dataclasses.Field, typing.Any]]:
    """field path -> (Field, type), descending into fields typed as a config dataclass."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        typ = hints.get(f.name)
        if isinstance(typ, type) and dataclasses.is_dataclass(typ):
            out.update(_leaves(typ, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (f, typ)
    return out


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    importlib.import_module(f"logitcache.cli.{command}").add_parser(p)
    return p


def _actions(command: str) -> list[argparse.Action]:
    return [a for a in _parser(command)._actions if not isinstance(a, argparse._HelpAction)]


def _mapping(command: str):
    module, name = CONFIGS[command]
    leaves = _leaves(getattr(importlib.import_module(module), name))
    by_leaf_name: dict[str, list[str]] = {}
    for path in leaves:
        by_leaf_name.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    mapped = {}
    for action in _actions(command):
        dest = action.dest
        path = ALIASES[command].get(dest)
        if path is None:
            path = dest if dest in leaves else None
        if path is None and len(by_leaf_name.get(dest, [])) == 1:
            path = by_leaf_name[dest][0]
        mapped[dest] = (action, path)
    return leaves, mapped


def _get(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _config(command: str, argv: list[str]):
    args = _parser(command).parse_args(argv)
    return importlib.import_module(f"logitcache.cli.{command}").config_from_args(args)


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
    stale = sorted(p for p in NO_FLAG[command] if p in flagged or p not in leaves)
    assert not stale, f"{command}: NO_FLAG entries that are flagged or gone: {stale}"


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_flag_defaults_are_the_config_defaults(command):
    leaves, mapped = _mapping(command)
    wrong = {}
    for dest, (action, path) in mapped.items():
        if path not in leaves or action.required:
            continue
        field_default = leaves[path][0].default
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


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_required_flags_alone_give_the_python_defaults(command):
    """Defaults live in one place: the CLI adds none of its own."""
    assert _config(command, REQUIRED_ARGV[command]) == python_config(command)


def _other_value(action: argparse.Action, default):
    """A command-line value for ``action`` that differs from ``default``."""
    if action.choices:
        return next(str(c) for c in action.choices if c != default)
    if action.type is int:
        return str((default or 0) + 3)
    if action.type is float:
        return str(round((default or 0.0) + 0.25, 4) if (default or 0) < 0.5 else 0.5)
    return "x-" + action.dest


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_each_flag_reaches_its_field(command):
    """And back: a non-default value of every flag lands in the field it maps to."""
    leaves, mapped = _mapping(command)
    for dest, (action, path) in mapped.items():
        if action.required or VALUES.get(dest, "") is None:
            continue
        base = list(REQUIRED_ARGV[command])
        if dest in REPLACES:
            i = base.index(REPLACES[dest])
            del base[i : i + 2]
        flag = action.option_strings[0]
        default = leaves[path][0].default
        if action.nargs == 0:  # a switch
            argv, expected = [flag], not default
        else:
            value = VALUES.get(dest) or _other_value(action, default)
            argv = [flag, value]
            expected = action.type(value) if action.type else value
        cfg = _config(command, [*base, *argv])
        assert _get(cfg, path) == expected, f"{command} {argv}: {path} = {_get(cfg, path)!r}"


def test_old_flag_names_still_work():
    assert _config("train", [*REQUIRED_ARGV["train"], "--seq-len", "32"]).max_seq_len == 32
    alpha = _config("train", [*REQUIRED_ARGV["train"], "--cross-tokenizer", "uld"]).loss.alpha
    assert alpha == 0.5  # --alpha not given: a cross-tokenizer student keeps its own CE
