"""Tests' shorthand for write configs: flat field names routed to their sections.

Tests vary one or two settings of a small build at a time (``_build(..., top_k=0)``), so they
name fields flatly; this routes each name to the section that holds it (``top_k`` ->
``labels``, ``seq_len`` -> ``packing``, ``teacher`` -> ``teacher.model``) and builds the
config with explicit sections, exactly as a Python caller would. Library code and docs build
the sections themselves.
"""

from __future__ import annotations

import dataclasses
import typing

# Flat names that differ from the field they set (the CLI flag's name).
RENAMED = {"teacher": "model", "packing": "mode"}


def sectioned(cls, **flat):
    """``cls`` (CaptureConfig, GenerateConfig) built from flat keyword arguments."""
    hints = typing.get_type_hints(cls)
    sections = {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }
    owner = {}
    for name, section in sections.items():
        for f in dataclasses.fields(section):
            owner[f.name] = name
    top = {f.name for f in dataclasses.fields(cls)} - set(sections)
    kwargs: dict = {name: {} for name in sections}
    for key, value in flat.items():
        if key in sections and isinstance(value, (sections[key], dict)):
            kwargs[key] = value  # a ready section, or its fields
            continue
        field_name = RENAMED.get(key, key)
        if key in top:
            kwargs[key] = value
        elif field_name in owner:
            kwargs[owner[field_name]][field_name] = value
        else:
            raise TypeError(f"{cls.__name__}: no field {key!r} in any section")
    for name, section in sections.items():
        if isinstance(kwargs[name], dict):
            kwargs[name] = section(**kwargs[name])
    return cls(**kwargs)


def capture_config(**flat):
    from logitcache.capture import CaptureConfig

    return sectioned(CaptureConfig, **flat)


def generate_config(**flat):
    from logitcache.generate import GenerateConfig

    return sectioned(GenerateConfig, **flat)
