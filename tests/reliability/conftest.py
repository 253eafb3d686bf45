"""Reliability fixtures: the tiny teacher, a small real corpus, tiny-cache builders, snapshots.

Everything here is kept small (a few hundred tokens per cache) so the whole suite fits its
five-minute budget on two cores; the heavy Ray tests reuse one session-wide local Ray.
"""

from __future__ import annotations

import json
import os

import pytest
from config_sections import capture_config
from rel_helpers import build_kwargs


@pytest.fixture(scope="session")
def corpus_jsonl(pydoc_jsonl):
    """Python documentation topics as JSONL (one document per topic; tests/conftest.py)."""
    return pydoc_jsonl


@pytest.fixture
def build(teacher_dir, corpus_jsonl):
    """``build(out, corpus=..., **overrides) -> Manifest``: a small in-process build."""
    from logitcache.capture import build_cache

    def run(out, corpus=None, **kw):
        return build_cache(
            capture_config(**build_kwargs(teacher_dir, corpus or corpus_jsonl, out, **kw))
        )

    return run


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session's Ray tests: 4 logical CPUs so two teacher actors leave
    room for the encode tasks on this 2-core machine."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def paragraphs_jsonl(tmp_path_factory):
    """Short documents (pydoc paragraphs), so small --unit-tokens give many units/shards."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "paragraphs.jsonl"
    with open(path, "w") as fh:
        for key in sorted(topics):
            for para in topics[key].split("\n\n"):
                if len(para.strip()) > 40:
                    fh.write(json.dumps({"text": para.strip()}) + "\n")
    return str(path)
