"""docs/format.md is the spec: its example manifest must parse with the reference reader."""

from __future__ import annotations

import json
import re
from pathlib import Path

from logitcache.codecs import get_codec
from logitcache.format import Manifest

DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"


def _example_manifest() -> dict:
    text = DOC.read_text()
    section = text.split("### Example", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    return json.loads(block)


def test_example_manifest_parses():
    m = Manifest.from_dict(_example_manifest())
    assert m.format_version == 1
    assert m.capture["alignment"] == "next-token"
    assert m.num_tokens == sum(s.tokens for s in m.shards) == 6144
    get_codec(m.codec["spec"])  # the spec names a registered codec


def test_every_manifest_field_the_writer_emits_is_documented():
    text = DOC.read_text()
    emitted = Manifest.from_dict(_example_manifest()).to_dict()
    for key in emitted:
        assert f"`{key}" in text, f"manifest key {key!r} is not documented in docs/format.md"


def test_example_manifest_checksum_is_the_specified_one():
    import hashlib

    d = _example_manifest()
    content = {k: v for k, v in d.items() if k != "checksum"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert d["checksum"] == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert Manifest.from_dict(d).integrity == "verified"
