"""The code blocks of docs/integrations.md, with the doc's example URIs mapped onto a test's
real cache and temporary directory (the doc shows s3:// URIs and the SmolLM2 teacher; the
tests run them against the tiny teacher's cache)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text())]


def substitute(code: str, *, cache: str, tmp: Path, teacher: str) -> str:
    for old, new in (
        ("s3://team/caches/smol", cache),
        ('"runs/', f'"{tmp}/runs/'),
        (" runs/", f" {tmp}/runs/"),
        ("./distillkit-data", f"{tmp}/distillkit-data"),
        ("./axolotl-data", f"{tmp}/axolotl-data"),
        ("./caches/", f"{tmp}/caches/"),
        ("smollm2-135m", teacher),
    ):
        code = code.replace(old, new)
    return code
