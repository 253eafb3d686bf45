"""Fixtures of the cluster tests (their cluster and build helpers: cluster_helpers.py)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def corpus(tmp_path):
    """pydoc topics, one document per paragraph: many small units to spread over replicas."""
    from pydoc_data.topics import topics

    path = tmp_path / "pydoc.jsonl"
    with open(path, "w") as fh:
        for key in sorted(topics):
            for para in topics[key].split("\n\n"):
                if para.strip():
                    fh.write(json.dumps({"text": para}) + "\n")
    return str(path)
