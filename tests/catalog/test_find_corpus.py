"""``catalog find --corpus``: match a real build's cache by the content of a corpus."""

from __future__ import annotations

import json
import shutil

from config_sections import capture_config

from logitcache.capture import build_cache
from logitcache.catalog import Catalog, catalog_key
from logitcache.cli import main as cli_main


def write_corpus(path, n_docs: int) -> str:
    from pydoc_data.topics import topics

    paras = [p for key in sorted(topics) for p in topics[key].split("\n\n") if p.strip()]
    with open(path, "w") as fh:
        for p in paras[:n_docs]:
            fh.write(json.dumps({"text": p}) + "\n")
    return str(path)


def test_find_matches_corpus_content_not_name(tiny_llama_dir, tmp_path, capsys):
    teacher = str(tiny_llama_dir)
    corpus = write_corpus(tmp_path / "docs.jsonl", 12)
    staged = tmp_path / "staged"
    manifest = build_cache(
        capture_config(
            teacher=teacher,
            corpus=[corpus],
            out=str(staged),
            top_k=4,
            seq_len=32,
            use_ray=False,
            device="cpu",
            dtype="float32",
            progress="off",
            codec="raw",
        )
    )
    root = tmp_path / "catalog"
    key = catalog_key(manifest)
    (root / "caches").mkdir(parents=True)
    shutil.move(str(staged), str(root / "caches" / key))  # a cache directory is relocatable
    assert [e["key"] for e in Catalog.open(str(root)).reindex()] == [key]

    # the same content under another name matches ...
    same = str(shutil.copy(corpus, tmp_path / "renamed.jsonl"))
    assert cli_main(["catalog", "find", str(root), "--teacher", teacher, "--corpus", same]) == 0
    assert key[:12] in capsys.readouterr().out
    # ... a grown corpus does not (a build would extend the cache instead)
    grown = write_corpus(tmp_path / "grown.jsonl", 13)
    assert cli_main(["catalog", "find", str(root), "--teacher", teacher, "--corpus", grown]) == 1
    assert key[:12] not in capsys.readouterr().out
