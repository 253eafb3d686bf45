"""Corpus files -> documents: every format, globs, directories, S3, and the error cases."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from logitcache.corpus import ReadStats, expand_sources, read_documents
from logitcache.errors import CorpusError


def _read(uris, **kw):
    stats = ReadStats()
    docs = list(read_documents(expand_sources(uris), stats=stats, **kw))
    return docs, stats


def test_text_files_one_document_per_file_glob_sorted(tmp_path):
    for name, text in [("b.txt", "second doc"), ("a.txt", "first doc"), ("c.md", "third")]:
        (tmp_path / name).write_text(text)
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    docs, stats = _read([str(tmp_path / "*.txt"), str(tmp_path / "c.md")])
    assert [d.text for d in docs] == ["first doc", "second doc", "third"]
    assert stats.files == 3 and stats.documents == 3


def test_directory_is_walked(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("x")
    (tmp_path / "y.txt").write_text("y")
    docs, _ = _read([str(tmp_path)])
    assert sorted(d.text for d in docs) == ["x", "y"]


def test_jsonl_text_field_and_skips(tmp_path):
    p = tmp_path / "c.jsonl"
    lines = [
        json.dumps({"body": "alpha"}).encode(),
        json.dumps({"body": "   \n"}).encode(),
        b'{"body": "bad \xff utf8"}',
        b"",
        json.dumps({"body": "beta"}).encode(),
    ]
    p.write_bytes(b"\n".join(lines) + b"\n")
    docs, stats = _read([str(p)], text_field="body")
    assert [d.text for d in docs] == ["alpha", "beta"]
    assert stats.skipped_empty == 1 and stats.skipped_invalid_utf8 == 1
    assert docs[1].where.endswith("c.jsonl:5")


def test_jsonl_missing_field_names_file_and_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(CorpusError, match=r"c\.jsonl:2.*no field 'text'.*--text-field"):
        _read([str(p)])


def test_jsonl_not_json_names_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: not valid JSON"):
        _read([str(p)])


def test_parquet_column(tmp_path):
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"content": ["one", None, "", "two"], "n": [1, 2, 3, 4]}), p)
    docs, stats = _read([str(p)], text_field="content")
    assert [d.text for d in docs] == ["one", "two"]
    assert stats.skipped_empty == 2
    with pytest.raises(CorpusError, match="no column 'text'"):
        _read([str(p)])


def test_chat_jsonl_autodetected_and_forced(tmp_path):
    p = tmp_path / "chat.jsonl"
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    p.write_text(json.dumps(chat) + "\n")
    docs, _ = _read([str(p)])
    assert docs[0].messages[1] == {"role": "assistant", "content": "yo"}
    forced, _ = _read([str(p)], fmt="chat")
    assert forced[0].content_hash == docs[0].content_hash
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:1"):
        _read([str(bad)], fmt="chat")


def test_empty_corpus_and_missing_paths(tmp_path):
    (tmp_path / "e.txt").write_text("  \n\n")
    with pytest.raises(CorpusError, match="no usable documents"):
        _read([str(tmp_path / "e.txt")])
    with pytest.raises(CorpusError, match="does not exist"):
        expand_sources([str(tmp_path / "nope.txt")])
    with pytest.raises(CorpusError, match="matched no files"):
        expand_sources([str(tmp_path / "*.jsonl")])


def test_content_hash_ignores_location(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("same text")
    (tmp_path / "y.txt").write_text("same text")
    docs, _ = _read([str(tmp_path / "a" / "x.txt"), str(tmp_path / "y.txt")])
    assert docs[0].content_hash == docs[1].content_hash and docs[0].where != docs[1].where


def test_s3_corpus_via_moto(s3_bucket):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.pipe(f"{s3_bucket}/corpus/b.jsonl", b'{"text": "from s3 b"}\n')
    fs.pipe(f"{s3_bucket}/corpus/a.jsonl", b'{"text": "from s3 a"}\n')
    docs, _ = _read([f"s3://{s3_bucket}/corpus/*.jsonl"])
    assert [d.text for d in docs] == ["from s3 a", "from s3 b"]
    assert docs[0].where == f"s3://{s3_bucket}/corpus/a.jsonl:1"


def test_gzip_jsonl(tmp_path):
    import gzip

    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as fh:
        fh.write('{"text": "zipped"}\n')
    docs, _ = _read([str(tmp_path / "c.jsonl.gz")])
    assert docs[0].text == "zipped"


def test_invalid_utf8_skip_by_default_replace_keeps_the_text(tmp_path):
    (tmp_path / "scraped.txt").write_bytes("caf\u00e9 page one\n".encode() + b"bad \xff byte\n")
    (tmp_path / "clean.txt").write_text("clean page")
    docs, stats = _read([str(tmp_path / "*.txt")])
    assert [d.text for d in docs] == ["clean page"]  # the whole file was dropped, counted
    assert stats.skipped_invalid_utf8 == 1 and stats.replaced_invalid_utf8 == 0
    docs, stats = _read([str(tmp_path / "*.txt")], invalid_utf8="replace")
    assert [d.text for d in docs] == ["clean page", "caf\u00e9 page one\nbad \ufffd byte\n"]
    assert stats.skipped_invalid_utf8 == 0 and stats.replaced_invalid_utf8 == 1
    assert stats.as_dict()["replaced_invalid_utf8"] == 1
    with pytest.raises(CorpusError, match="--invalid-utf8 'drop'"):
        _read([str(tmp_path / "*.txt")], invalid_utf8="drop")


def test_invalid_utf8_replace_in_jsonl_and_parquet(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": "bad \xff utf8"}\n')
    docs, stats = _read([str(p)], invalid_utf8="replace")
    assert [d.text for d in docs] == ["ok", "bad \ufffd utf8"] and stats.replaced_invalid_utf8 == 1
    table = pa.table({"text": pa.array([b"fine", b"bad \xfe"], type=pa.binary())})
    pq.write_table(table, tmp_path / "c.parquet")
    docs, stats = _read([str(tmp_path / "c.parquet")], invalid_utf8="replace")
    assert [d.text for d in docs] == ["fine", "bad \ufffd"] and stats.replaced_invalid_utf8 == 1
