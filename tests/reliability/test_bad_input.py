"""Bad input: each fails with a specific error naming the fix, and writes or loses nothing.

Every refusal is tried against a fresh ``--out`` (which must not appear) and, where a build
could reach it, against an existing good cache (whose files must stay byte-identical).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from config_sections import capture_config
from rel_helpers import cli_args, snapshot

from logitcache.cli import main
from logitcache.errors import (
    ConfigError,
    CorpusError,
    FormatVersionError,
    IncompatibleCacheError,
    ManifestError,
    TeacherError,
    VocabularyMismatchError,
)
from logitcache.format import open_cache


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory, tiny_llama_dir, corpus_jsonl):
    """One healthy cache that every refused build is pointed at."""
    from rel_helpers import build_kwargs

    from logitcache.capture import build_cache

    out = str(tmp_path_factory.mktemp("good") / "cache")
    build_cache(capture_config(**build_kwargs(str(tiny_llama_dir), corpus_jsonl, out)))
    return out


def _refused(capsys, args, match):
    """`logitcache build ...` exits 2 with a one-line error matching ``match``."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and match in err, err
    return err


def _refused_everywhere(capsys, build, teacher_dir, tmp_path, good_cache, corpus, exc, match, **kw):
    """Python API and CLI both refuse; a fresh --out is never created, a good cache untouched."""
    fresh = str(tmp_path / "fresh")
    before = snapshot(good_cache)
    with pytest.raises(exc, match=re.escape(match)):
        build(fresh, corpus=corpus, **kw)
    with pytest.raises(exc, match=re.escape(match)):
        build(good_cache, corpus=corpus, **kw)
    extra = []
    for key, value in kw.items():
        extra += [f"--{key.replace('_', '-')}", str(value)]
    _refused(capsys, cli_args(teacher_dir, corpus, fresh, *extra), match)
    _refused(capsys, cli_args(teacher_dir, corpus, good_cache, *extra), match)
    assert not os.path.exists(fresh)
    assert snapshot(good_cache) == before


def test_empty_corpus(capsys, build, teacher_dir, tmp_path, good_cache):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _refused_everywhere(
        capsys, build, teacher_dir, tmp_path, good_cache, str(empty), CorpusError,
        "no usable documents",
    )  # fmt: skip
    _refused_everywhere(
        capsys, build, teacher_dir, tmp_path, good_cache, str(tmp_path / "nothing-*.jsonl"),
        CorpusError, "nothing-",
    )  # fmt: skip


def test_only_empty_and_whitespace_documents(capsys, build, teacher_dir, tmp_path, good_cache):
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n".join(json.dumps({"text": t}) for t in ["", "   ", "\n\t \n"]) + "\n")
    _refused_everywhere(
        capsys, build, teacher_dir, tmp_path, good_cache, str(blank), CorpusError,
        "3 empty",
    )  # fmt: skip


def test_empty_documents_are_skipped_and_counted(build, tmp_path, corpus_jsonl):
    mixed = tmp_path / "mixed.jsonl"
    with open(corpus_jsonl) as src:
        good = [next(src) for _ in range(5)]
    lines = [json.dumps({"text": ""}), good[0].strip(), json.dumps({"text": " \n\t "})]
    mixed.write_text("\n".join(lines + [g.strip() for g in good[1:]]) + "\n")
    (tmp_path / "blank.txt").write_text("   \n\n  ")
    m = build(str(tmp_path / "out"), corpus=[str(mixed), str(tmp_path / "blank.txt")])
    assert m.status == "complete" and m.num_tokens == 400
    assert m.corpus["skipped_empty"] == 3 and m.corpus["documents"] == 5


def test_invalid_utf8_documents_are_skipped_and_counted(
    capsys, build, teacher_dir, tmp_path, good_cache, corpus_jsonl
):
    with open(corpus_jsonl, "rb") as src:
        good = [next(src) for _ in range(4)]
    bad_line = b'{"text": "caf\xe9 \xff\xfe"}\n'
    (tmp_path / "mixed.jsonl").write_bytes(good[0] + bad_line + b"".join(good[1:]))
    (tmp_path / "latin1.txt").write_bytes("déjà vu".encode("latin-1"))
    m = build(
        str(tmp_path / "out"), corpus=[str(tmp_path / "mixed.jsonl"), str(tmp_path / "latin1.txt")]
    )
    assert m.corpus["skipped_invalid_utf8"] == 2 and m.corpus["documents"] == 4
    ids = [s["sample_id"] for s in open_cache(str(tmp_path / "out")).iter_samples()]
    assert len(ids) == len(set(ids)) > 0
    # A corpus of nothing but invalid UTF-8 is an empty corpus, said so.
    (tmp_path / "bad.jsonl").write_bytes(bad_line * 3)
    _refused_everywhere(
        capsys, build, teacher_dir, tmp_path, good_cache, str(tmp_path / "bad.jsonl"),
        CorpusError, "3 invalid-UTF-8",
    )  # fmt: skip


def test_missing_text_field(capsys, build, teacher_dir, tmp_path, good_cache):
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"body": "some text that is long enough"}) + "\n")
    _refused_everywhere(
        capsys, build, teacher_dir, tmp_path, good_cache, str(wrong), CorpusError,
        "no field 'text'",
    )  # fmt: skip
    err = _refused(capsys, cli_args(teacher_dir, str(wrong), str(tmp_path / "f")), "--text-field")
    assert "wrong.jsonl:1" in err


@pytest.mark.parametrize("teacher", ["/nonexistent/teacher-dir", "no-such-org/no-such-model"])
def test_teacher_that_does_not_exist(capsys, teacher, tmp_path, corpus_jsonl, good_cache):
    before = snapshot(good_cache)
    for out in (str(tmp_path / "fresh"), good_cache):
        _refused(capsys, cli_args(teacher, corpus_jsonl, out), teacher)
        with pytest.raises(TeacherError, match=teacher):
            from rel_helpers import build_kwargs

            from logitcache.capture import build_cache

            build_cache(capture_config(**build_kwargs(teacher, corpus_jsonl, out)))
    assert not os.path.exists(tmp_path / "fresh")
    assert snapshot(good_cache) == before


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"top_k": 0}, "--top-k 0 needs --rs-samples"),
        ({"top_k": -3}, "--top-k -3: must be >= 0"),
        ({"seq_len": 1}, "--seq-len 1: rows need at least 2 tokens"),
        ({"seq_len": 0}, "--seq-len 0"),
    ],
)
def test_bad_capture_settings_fail_before_anything_runs(capsys, kw, match, tmp_path, teacher_dir):
    from rel_helpers import build_kwargs

    with pytest.raises(ConfigError, match=match):
        capture_config(**build_kwargs(teacher_dir, "unused.jsonl", str(tmp_path / "x"), **kw))
    ((flag, value),) = kw.items()
    args = cli_args(teacher_dir, "unused.jsonl", str(tmp_path / "x"))
    args[args.index(f"--{flag.replace('_', '-')}") + 1] = str(value)
    _refused(capsys, args, match)
    assert not os.path.exists(tmp_path / "x")


def test_k_larger_than_the_vocabulary(
    capsys, build, teacher_dir, tmp_path, good_cache, corpus_jsonl
):
    _refused_everywhere(
        capsys, build, teacher_dir, tmp_path, good_cache, corpus_jsonl, ConfigError,
        "top_k=513 exceeds the teacher's vocabulary (512 logits)", top_k=513,
    )  # fmt: skip


@pytest.mark.slow
def test_single_10mb_document_is_packed_with_bounded_memory(teacher_dir, tmp_path):
    """One 10 MB document becomes seq_len windows; it costs little more memory than a small one.

    Peak RSS is compared with the same build over a 100 KB document, so the fixed cost of the
    process (torch, the teacher, compiled codec kernels) does not blur what the size adds.
    """
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))

    def build_peak_mib(size: int, name: str) -> tuple[float, str]:
        (tmp_path / f"{name}.txt").write_text((text * (size // len(text) + 1))[:size])
        out = str(tmp_path / f"out-{name}")
        args = cli_args(teacher_dir, str(tmp_path / f"{name}.txt"), out)
        args[args.index("--max-tokens") + 1] = "3000"
        args[args.index("--unit-tokens") + 1] = "1000"
        code = (
            "import resource, sys; from logitcache.cli import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=240
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split("MAXRSS")[-1]) / 1024, out

    small_mib, _ = build_peak_mib(100 * 2**10, "small")
    big_mib, out = build_peak_mib(10 * 2**20, "big")
    assert big_mib - small_mib < 512, (
        f"peak RSS {big_mib:.0f} MiB for a 10 MB document vs {small_mib:.0f} MiB for 100 KB"
    )
    m = open_cache(out).manifest
    assert m.num_tokens == 3000 and m.corpus["documents"] == 1
    lengths = [len(s["input_ids"]) for s in open_cache(out).iter_samples()]
    assert max(lengths) == 64 and sum(lengths) == 3000


def _edit_manifest(uri, edit):
    path = os.path.join(uri, "manifest.json")
    with open(path) as fh:
        d = json.load(fh)
    edit(d)
    with open(path, "w") as fh:
        json.dump({k: v for k, v in d.items() if k != "checksum"}, fh)  # opens unchecked


def test_newer_format_version_is_refused_everywhere(
    capsys, good_cache, tmp_path, build, teacher_dir, corpus_jsonl
):
    import shutil

    from logitcache.data import CacheDataset

    uri = str(tmp_path / "newer")
    shutil.copytree(good_cache, uri)
    _edit_manifest(uri, lambda d: d.update(format_version=d["format_version"] + 1))
    before = snapshot(uri)
    with pytest.raises(FormatVersionError, match="upgrade logitcache"):
        open_cache(uri)
    with pytest.raises(FormatVersionError):
        CacheDataset(uri)
    assert main(["verify", uri]) != 0
    assert "upgrade logitcache" in capsys.readouterr().err
    # Resuming a build into it must not overwrite the newer manifest.
    with pytest.raises(FormatVersionError):
        build(uri)
    _refused(capsys, cli_args(teacher_dir, corpus_jsonl, uri), "upgrade logitcache")
    assert snapshot(uri) == before


@pytest.mark.parametrize(
    "bad_path",
    [
        "../outside.parquet",
        "shards/../../outside.parquet",
        "/etc/passwd",
        "s3://other-bucket/x.parquet",
    ],
)
def test_shard_paths_leaving_the_root_are_refused(capsys, good_cache, tmp_path, bad_path):
    import shutil

    from logitcache.data import CacheDataset

    uri = str(tmp_path / "hostile")
    shutil.copytree(good_cache, uri)
    (tmp_path / "outside.parquet").write_bytes(b"PAR1 secret outside the cache")
    _edit_manifest(uri, lambda d: d["shards"][0].update(path=bad_path))
    with pytest.raises(ManifestError, match="cache root|plain relative path"):
        open_cache(uri)
    with pytest.raises(ManifestError):
        CacheDataset(uri)
    assert main(["verify", uri]) == 2 and "hostile" in capsys.readouterr().err
    assert main(["info", uri]) == 2


def test_catalog_refuses_hostile_manifest(tmp_path, good_cache, caplog):
    """A catalog cache whose manifest points outside is never indexed nor followed."""
    import shutil

    catalog = pytest.importorskip("logitcache.catalog.catalog")
    root = str(tmp_path / "catalog")
    shutil.copytree(good_cache, os.path.join(root, catalog.CACHES_DIR, "evil"))
    _edit_manifest(
        os.path.join(root, catalog.CACHES_DIR, "evil"),
        lambda d: d["shards"][0].update(path="../../../outside.parquet"),
    )
    cat = catalog.Catalog.open(root)
    with pytest.raises(ManifestError, match="cache root"):
        cat.manifest("evil")
    with pytest.raises(ManifestError):
        cat.reindex()
    assert not os.path.exists(os.path.join(root, catalog.INDEX_DIR, "evil.json"))


def test_student_vocabulary_must_match_the_cache(capsys, good_cache, tmp_path):
    from logitcache.teachers.testing import make_tiny_llama

    other = make_tiny_llama(tmp_path / "other", vocab_size=300, seed=1)
    out = tmp_path / "run"
    before = snapshot(good_cache)
    args = ["train", "--cache", good_cache, "--student", str(other), "--out", str(out)]
    assert main([*args, "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "VocabularyMismatch" in err or "tokenizer" in err, err
    from logitcache.format import open_cache as oc
    from logitcache.train.student import build_student

    with pytest.raises(VocabularyMismatchError, match="--student tiny"):
        build_student(str(other), oc(good_cache).manifest)
    assert not out.exists() or not any(out.rglob("*.pt"))
    assert snapshot(good_cache) == before


def test_rerun_with_different_settings_leaves_cache_untouched(capsys, good_cache, build):
    before = snapshot(good_cache)
    with pytest.raises(IncompatibleCacheError, match="capture.top_k: 8 in cache, 4 requested"):
        build(good_cache, top_k=4)
    assert snapshot(good_cache) == before
    assert np.isfinite(open_cache(good_cache).manifest.num_tokens)
