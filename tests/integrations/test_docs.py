"""Every code block of docs/integrations.md runs (the Ray Train block in test_ray_train.py)."""

from __future__ import annotations

import shlex

from docblocks import blocks, substitute

from logitcache.cli import main as cli


def test_every_block_of_docs_integrations_runs(int_cache, tiny_student, tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    namespace = {
        "student": tiny_student,
        "tokenizer": AutoTokenizer.from_pretrained(str(tiny_llama_dir)),
    }
    ran = 0
    for lang, code in blocks():
        code = substitute(code, cache=int_cache, tmp=tmp_path, teacher=str(tiny_llama_dir))
        if "ray_train_distill.py" in code:
            continue  # run by test_ray_train.py (a Ray cluster is too costly to start twice)
        if lang == "python":
            exec(compile(code, "docs/integrations.md", "exec"), namespace)
        else:
            for line in code.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                if argv:
                    assert argv[0] == "logitcache", line
                    assert cli(argv[1:]) == 0, line
        ran += 1
    assert ran >= 5
    assert namespace["row"]["topk_ids"]  # the datasets block decoded a row
    assert (tmp_path / "caches" / "from-ax" / "manifest.json").exists()
