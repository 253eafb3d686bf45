"""Ray Train: a TorchTrainer with 2 CPU workers on local Ray trains from ray_dataset(cache),
each sample exactly once per epoch (pipelines/ray_train_distill.py)."""

from __future__ import annotations

import json
import shlex
from collections import Counter

import pytest

from logitcache.format import open_cache


@pytest.mark.slow
def test_torch_trainer_two_workers_see_every_sample_once_per_epoch(
    int_cache, tmp_path, monkeypatch
):
    import ray
    from docblocks import blocks, substitute

    from pipelines.ray_train_distill import main

    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True, configure_logging=False)  # fmt: skip
    record = tmp_path / "seen"
    record.mkdir()
    try:
        # the command docs/integrations.md shows, on this test's cache
        (code,) = [c for _, c in blocks() if "ray_train_distill.py" in c]
        code = substitute(code, cache=int_cache, tmp=tmp_path, teacher="").replace("\\\n", " ")
        argv = shlex.split(code)
        assert argv[:2] == ["python", "pipelines/ray_train_distill.py"]
        main(argv[2:] + ["--record", str(record)])
    finally:
        ray.shutdown()
    workers = [json.loads((record / f"seen-{r}.json").read_text()) for r in range(2)]
    assert len(workers[0]) == len(workers[1])  # same number of steps on both workers
    every = Counter(s["sample_id"] for s in open_cache(int_cache).iter_samples())
    for epoch in range(2):
        ids = [i for w in workers for b in w if b["epoch"] == epoch for i in b["ids"]]
        assert Counter(ids) == every
    assert (tmp_path / "runs" / "ray" / "student" / "config.json").exists()
