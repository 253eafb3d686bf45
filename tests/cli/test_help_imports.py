"""`logitcache --help` and each command's `--help` answer without importing torch (a second of
start-up on every call, and the CUDA build's libraries on a GPU node)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from logitcache.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "ray") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


COMMANDS = ["build", "generate", "train", "info", "verify", "catalog", "submit", "convert"]


@pytest.mark.parametrize("args", [["--help"]] + [[c, "--help"] for c in COMMANDS])
def test_help_does_not_import_torch(args):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert "usage:" in proc.stdout, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout[-500:]
