"""Security: the read path never unpickles, remote code runs only when asked, and credentials
never reach a manifest, a log record or a shard."""

from __future__ import annotations

import ast
import json
import logging
import pathlib
import pickle

import numpy as np
import pytest
from config_sections import capture_config
from rel_helpers import build_kwargs, cli_args

import logitcache
from logitcache.capture import build_cache
from logitcache.format import open_cache, verify_cache

READ_PATH = ("format", "data", "codecs", "storage", "catalog")
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def _unsafe_uses(path: pathlib.Path) -> list[str]:
    """Deserialisers that can run code, found in the syntax tree (comments and docs ignored)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if a.name in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "") in UNSAFE_MODULES:
            found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in {"eval", "exec", "__import__"}:
                found.append(f"{where} {f.id}()")
            if isinstance(f, ast.Attribute) and f.attr in {"load", "loads", "Unpickler"}:
                base = f.value.id if isinstance(f.value, ast.Name) else ""
                if base in UNSAFE_MODULES | {"torch"}:
                    found.append(f"{where} {base}.{f.attr}()")
            if isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name):
                if f.value.id in {"np", "numpy", "yaml"}:
                    found.append(f"{where} {f.value.id}.load()")  # allow_pickle / yaml tags
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{where} allow_pickle=")
    return found


def test_read_path_source_has_no_code_executing_deserialisers():
    pkg = pathlib.Path(logitcache.__file__).parent
    files = [p for sub in READ_PATH for p in sorted((pkg / sub).rglob("*.py"))]
    assert len(files) > 10  # the scan really covers the read path
    problems = [use for p in files for use in _unsafe_uses(p)]
    assert problems == [], problems


def test_the_scanner_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport torch\nimport numpy as np\n"
        "pickle.loads(b'')\ntorch.load('x')\nnp.load('x', allow_pickle=True)\neval('1')\n"
    )
    assert len(_unsafe_uses(bad)) == 6


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory, tiny_llama_dir, corpus_jsonl):
    out = str(tmp_path_factory.mktemp("sec") / "cache")
    build_cache(
        capture_config(**build_kwargs(str(tiny_llama_dir), corpus_jsonl, out, rs_samples=4))
    )
    return out


def test_reading_never_unpickles_at_runtime(small_cache, monkeypatch):
    import torch

    from logitcache.data import CacheDataset, collate

    def refuse(*args, **kwargs):
        raise AssertionError("the read path tried to unpickle / torch.load cache content")

    for mod, name in [
        (pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load"), (np, "load"),
    ]:  # fmt: skip
        monkeypatch.setattr(mod, name, refuse)
    cache = open_cache(small_cache)
    samples = list(cache.iter_samples(verify_checksums=True))
    assert samples and all(s["rs_counts"].sum(1).max() == 4 for s in samples)
    assert verify_cache(cache).ok
    got = list(CacheDataset(small_cache, shuffle=False))
    assert sorted(s["sample_id"] for s in got) == sorted(s["sample_id"] for s in samples)
    batch = collate(got[:2])
    assert batch["topk_ids"].shape[-1] == 8


def _record_from_pretrained(monkeypatch):
    """Record the kwargs every real from_pretrained call receives (calls go through)."""
    import transformers

    seen: list[tuple[str, dict]] = []
    for cls_name in ("AutoModelForCausalLM", "AutoTokenizer", "AutoConfig"):
        cls = getattr(transformers, cls_name)
        original = cls.from_pretrained.__func__

        def wrapper(klass, *args, _orig=original, _name=cls_name, **kwargs):
            seen.append((_name, dict(kwargs)))
            return _orig(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapper))
    return seen


def test_trust_remote_code_is_off_unless_asked(teacher_dir, corpus_jsonl, tmp_path, monkeypatch):
    seen = _record_from_pretrained(monkeypatch)
    build_cache(capture_config(**build_kwargs(teacher_dir, corpus_jsonl, str(tmp_path / "a"))))
    assert {name for name, _ in seen} >= {"AutoModelForCausalLM", "AutoTokenizer"}
    assert all(kw.get("trust_remote_code", False) is False for _, kw in seen), seen
    seen.clear()
    build_cache(
        capture_config(
            **build_kwargs(teacher_dir, corpus_jsonl, str(tmp_path / "b"), trust_remote_code=True)
        )
    )
    model_calls = [kw for name, kw in seen if name == "AutoModelForCausalLM"]
    assert model_calls and all(kw.get("trust_remote_code") is True for kw in model_calls)


SECRET = "SeCrEt-9f3c7e1a-never-log-me"
TOKEN = "ToKeN-5b2d8a66-never-log-me"


def test_credentials_never_reach_manifest_logs_or_shards(
    s3_bucket, teacher_dir, corpus_jsonl, monkeypatch, caplog, capsys
):
    from logitcache.cli import main

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET + "-env")
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN + "-env")
    options = {"key": "AKIDRELIABILITYTEST", "secret": SECRET, "token": TOKEN}
    uri = f"s3://{s3_bucket}/caches/secret"
    caplog.set_level(logging.DEBUG)
    args = cli_args(teacher_dir, corpus_jsonl, uri, "--storage-options", json.dumps(options))
    assert main(["-v", *args]) == 0
    assert main(["-v", "info", uri, "--storage-options", json.dumps(options)]) == 0
    assert main(["-v", "verify", uri, "--storage-options", json.dumps(options)]) == 0
    cache = open_cache(uri, storage_options=options)
    blobs = {"manifest": cache.store.read_bytes("manifest.json")}
    blobs.update({s.path: cache.store.read_bytes(s.path) for s in cache.shards})
    out = capsys.readouterr()
    blobs["stdout"], blobs["stderr"] = out.out.encode(), out.err.encode()
    records = caplog.records
    assert any(r.name.startswith("logitcache") for r in records)
    blobs["logs"] = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records
    ).encode()
    for needle in (SECRET, TOKEN):
        for name, data in blobs.items():
            assert needle.encode() not in data, f"{needle[:6]}... leaked into {name}"
    assert json.loads(blobs["manifest"])["shards"]
