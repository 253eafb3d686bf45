"""Ray faults and load: a teacher actor SIGKILLed mid-build (Ray Data restarts it and retries
its unit: max_restarts / max_task_retries default to -1 for actor pools), over a build of 20+
shards with 2 actors, then 4 DataLoader workers read every sample exactly once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from config_sections import capture_config
from rel_helpers import build_kwargs

from logitcache.capture import build_cache
from logitcache.format import open_cache, verify_cache


def _teacher_actor_pids() -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "TeacherActor" in cmd and proc.info["pid"] != os.getpid():
            pids.append(proc.info["pid"])
    return pids


def _committed(out: str) -> int:
    try:
        with open(os.path.join(out, "manifest.json")) as fh:
            return len(json.load(fh)["shards"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_actor_killed_mid_build_then_four_loader_workers(
    ray_local, teacher_dir, paragraphs_jsonl, tmp_path
):
    from logitcache.data import make_dataloader

    out = str(tmp_path / "cache")
    kw = build_kwargs(
        teacher_dir, paragraphs_jsonl, out, max_tokens=6000, unit_tokens=200, use_ray=True,
        workers=2, rs_samples=3,
    )  # fmt: skip
    result: dict = {}

    def run():
        try:
            result["manifest"] = build_cache(capture_config(**kw))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    builder = threading.Thread(target=run)
    builder.start()
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and builder.is_alive():
        pids = _teacher_actor_pids()
        if len(pids) >= 2 and _committed(out) >= 3:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    builder.join(timeout=300)
    assert "error" not in result, result.get("error")
    assert killed is not None, "the build finished before an actor could be killed"
    m = result["manifest"]
    assert m.status == "complete" and len(m.shards) >= 20
    assert m.num_tokens == 6000 and len(m.shards) == m.corpus["planned_units"]
    assert len({s.unit for s in m.shards}) == len(m.shards)
    assert not any(p == killed for p in _teacher_actor_pids())
    cache = open_cache(out)
    assert verify_cache(cache).ok  # includes: no sample id in two shards
    expected = sorted(s["sample_id"] for s in cache.iter_samples())
    assert len(expected) == len(set(expected)) == m.num_sequences

    from torch.utils.data import DataLoader

    from logitcache.data import CacheDataset

    ds = CacheDataset(out, shuffle=True, seed=1)
    ids = DataLoader(ds, batch_size=4, num_workers=4, collate_fn=_ids)
    assert sorted(sid for batch in ids for sid in batch) == expected
    # The training collate path with the same 4 workers: every token exactly once.
    batches = list(make_dataloader(CacheDataset(out, seed=2), batch_size=4, num_workers=4))
    assert sum(int(b["attention_mask"].sum()) for b in batches) == 6000


def _ids(samples):
    return [s["sample_id"] for s in samples]
