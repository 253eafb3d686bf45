"""Capture fixtures: many-document corpora and one local Ray for the session (the tiny teacher
and the pydoc corpus are in tests/conftest.py)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def paragraphs_jsonl(tmp_path_factory):
    """pydoc topics split at blank lines: many short documents, hence many small units."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "paragraphs.jsonl"
    with open(path, "w") as fh:
        for key in sorted(topics):
            for para in topics[key].split("\n\n"):
                if len(para.strip()) > 40:
                    fh.write(json.dumps({"text": para.strip()}) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray for the Ray tests: 4 logical CPUs on this 2-core box, so two teacher actors
    (one logical CPU each) leave room for the encode tasks."""
    import os

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
