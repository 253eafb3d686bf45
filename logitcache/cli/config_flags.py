"""argparse options generated from config dataclasses, and configs built back from them.

A config's fields declare their flags (:func:`logitcache.fields.option`); nested config
dataclasses (sections) are descended into. So a flag's name, type, choices, help and default
are written once, on the field: :func:`add_config_flags` adds them to a parser and
:func:`config_from_args` builds the config from the parsed namespace. A flag left at None
("not given") leaves its field at the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from logitcache.fields import flag_dest, flag_names, flag_of


def leaves(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(path, field, type)`` of every non-section field of ``cls``, sections descended
    into (``teacher.model``, ``run.use_ray``, ...)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _section(hint) is not None:
            yield from leaves(_section(hint), f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, hint


def _section(hint: Any) -> type | None:
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _scalar(hint: Any) -> tuple[Any, bool]:
    """(argparse ``type`` or None for str, whether the option takes a list)."""
    if typing.get_origin(hint) is list:
        return None, True
    options = set(typing.get_args(hint)) - {type(None)} if _is_union(hint) else {hint}
    if str in options:
        return None, False  # e.g. storage options: JSON text, parsed by the library
    for typ in (int, float):
        if typ in options:
            return typ, False
    return None, False


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: Collection[str] = (),
    required: Collection[str] = (),
    help: Mapping[str, str] | None = None,
) -> None:
    """Add the flags of every field of ``cls`` (sections included) that declares one.

    ``skip``: field paths this command does not offer; ``required``: paths whose flag this
    command requires although the field has a default; ``help``: per-command help texts.
    """
    groups: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for path, f, hint in leaves(cls):
        meta = flag_of(f)
        if meta is None or path in skip:
            continue
        kwargs: dict[str, Any] = {
            "dest": flag_dest(f),
            "help": (help or {}).get(path, meta["help"]),
        }
        has_default = f.default is not dataclasses.MISSING
        if hint is bool:
            kwargs["action"] = "store_true"
            kwargs["default"] = False
            if has_default and bool(f.default) != bool(meta["negate"]):
                raise TypeError(
                    f"{cls.__name__}.{path}: a store_true flag needs the opposite default"
                )
        else:
            typ, many = _scalar(hint)
            if typ is not None:
                kwargs["type"] = typ
            if many:
                kwargs["nargs"] = "+"
            if meta["choices"] is not None:
                kwargs["choices"] = list(meta["choices"])
            if meta["metavar"] is not None:
                kwargs["metavar"] = meta["metavar"]
            if meta["unset_is_none"]:
                kwargs["default"] = None
            elif has_default:
                kwargs["default"] = f.default
            if not has_default or path in required:
                kwargs["required"] = True
        # Help lists a section's flags under its name ("teacher options", ...).
        target = parser
        if "." in path:
            title = path.split(".", 1)[0]
            if title not in sections:
                sections[title] = parser.add_argument_group(f"{title} options")
            target = sections[title]
        if meta["group"]:
            if meta["group"] not in groups:
                groups[meta["group"]] = target.add_mutually_exclusive_group()
            target = groups[meta["group"]]
        target.add_argument(*flag_names(f), **kwargs)


def config_from_args(
    cls: type,
    args: argparse.Namespace,
    *,
    skip: Collection[str] = (),
    unset: Mapping[str, Any] | None = None,
    _prefix: str = "",
):
    """Build ``cls`` from the namespace that :func:`add_config_flags` parsed.

    A flag whose value is None keeps the field's dataclass default, or takes ``unset[path]``
    when the command gives one (a default that depends on another flag).
    """
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = _prefix + f.name
        section = _section(hints[f.name])
        if section is not None:
            kwargs[f.name] = config_from_args(
                section, args, skip=skip, unset=unset, _prefix=path + "."
            )
            continue
        meta = flag_of(f)
        if meta is None or path in skip:
            continue
        value = getattr(args, flag_dest(f))
        if meta["negate"]:
            value = not value
        if value is None and f.default is not None:
            if unset and path in unset:
                kwargs[f.name] = unset[path]
            continue  # "not given": the dataclass default
        kwargs[f.name] = list(value) if isinstance(value, (list, tuple)) else value
    return cls(**kwargs)
