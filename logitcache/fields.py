"""``option``: a config field that also describes its command-line flag.

The config dataclasses are the one source of every option's name, default and help. A field
declared with :func:`option` carries its flag in ``field.metadata["cli"]``; the CLI
(:mod:`logitcache.cli.config_flags`) turns those into argparse options and builds the config
back from the parsed arguments. This module holds only the declaration, so configs that the
library uses without a CLI (losses, generation parameters) import nothing from ``cli/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from logitcache.errors import ConfigError

CLI = "cli"  # the metadata key


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str | None = None,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    negate: str | None = None,
    unset_is_none: bool = False,
    group: str | None = None,
) -> Any:
    """A dataclass field with its flag.

    ``flag`` overrides the name derived from the field (``top_k`` -> ``--top-k``); ``aliases``
    are further names of the same flag (old names kept working). ``negate`` names a flag that
    sets a ``True``-by-default bool to False (``use_ray`` <- ``--no-ray``). With
    ``unset_is_none`` the flag defaults to None ("not given") and the field keeps its
    dataclass default unless the command decides otherwise. Flags sharing a ``group`` are
    mutually exclusive. A field without a default is a required flag.
    """
    meta = {
        CLI: {
            "help": help,
            "flag": flag,
            "aliases": tuple(aliases),
            "choices": tuple(choices) if choices is not None else None,
            "metavar": metavar,
            "negate": negate,
            "unset_is_none": unset_is_none,
            "group": group,
        }
    }
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> dict[str, Any] | None:
    """The flag description of a field, or None for a field set from Python only."""
    return f.metadata.get(CLI)


def flag_names(f: dataclasses.Field) -> list[str]:
    """The option strings of a field's flag: its name first, then its aliases."""
    meta = flag_of(f) or {}
    first = meta.get("negate") or meta.get("flag") or "--" + f.name.replace("_", "-")
    return [first, *meta.get("aliases", ())]


def flag_dest(f: dataclasses.Field) -> str:
    """The argparse ``dest`` of a field's flag (from its first option string)."""
    return flag_names(f)[0].lstrip("-").replace("-", "_")


def check_choices(config: Any) -> None:
    """Refuse a field whose value is not one of the ``choices`` its flag declares, naming the
    flag: the declaration that feeds argparse is also the check for Python callers."""
    for f in dataclasses.fields(config):
        choices = (flag_of(f) or {}).get("choices")
        value = getattr(config, f.name)
        if choices is not None and value not in choices:
            raise ConfigError(
                f"{flag_names(f)[0]} {value!r}: choose one of {', '.join(map(str, choices))}"
            )


def coerce_section(config: Any, name: str, cls: type) -> None:
    """Let ``config.name`` be given as a dict of ``cls``'s fields (JSON job specs, tests), and
    refuse anything that is neither that nor a ``cls``."""
    value = getattr(config, name)
    if isinstance(value, dict):
        setattr(config, name, cls(**value))
    elif not isinstance(value, cls):
        raise ConfigError(
            f"{type(config).__name__}.{name} must be a {cls.__name__} (or a dict of its "
            f"fields), got {type(value).__name__}"
        )
