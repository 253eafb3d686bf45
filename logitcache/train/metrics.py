"""Metrics as JSON lines (one object per log or eval event) and a PNG of the curves.

JSONL is append-only and trivially parsed by anything; on ``--resume`` lines newer than the
checkpoint are dropped first, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "metrics.png"


class MetricsLog:
    def __init__(self, out_dir: str, *, resume_step: int | None = None):
        self.path = os.path.join(out_dir, METRICS_NAME)
        if resume_step is None:
            open(self.path, "w").close()
        elif os.path.exists(self.path):
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            with open(self.path, "w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in kept)

    def write(self, record: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        with open(self.path, "a") as fh:
            fh.write(json.dumps(clean) + "\n")


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_metrics(out_dir: str) -> str | None:
    """Train loss and held-out CE / KL / top-1 agreement against the step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(os.path.join(out_dir, METRICS_NAME))
    panels = [
        ("train", "loss", "train loss"),
        ("eval", "eval_kl", "held-out KL(teacher || student)"),
        ("eval", "eval_ce", "held-out cross-entropy (true tokens)"),
        ("eval", "eval_top1", "held-out top-1 agreement with teacher"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (split, key, title) in zip(axes, panels):
        pts = [
            (r["step"], r[key])
            for r in records
            if r.get("split") == split and r.get(key) is not None
        ]
        if pts:
            ax.plot(*zip(*pts), marker="o" if split == "eval" else None, markersize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, PLOT_NAME)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
