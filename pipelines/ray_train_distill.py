"""Ray Train example: distil a student from a cache with ``TorchTrainer`` workers.

    python pipelines/ray_train_distill.py --cache CACHE --out DIR --workers 2 --epochs 1

Each worker reads its split of ``logitcache.data.ray_dataset(cache)`` (no row dropped:
``ExactlyOnceDataConfig``), steps on the same number of batches as the others
(``iter_distill_batches``), and rank 0 saves the student with ``save_pretrained``. Every sample
is seen exactly once per epoch; with ``--record`` each worker writes the sample ids it saw.
"""

from __future__ import annotations

import argparse
import json
import os


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import torch
    from ray.train.torch import prepare_model

    from logitcache.format import open_cache
    from logitcache.integrations.ray_train import iter_distill_batches
    from logitcache.losses import LossConfig, compute_loss
    from logitcache.train.student import preset_student

    manifest = open_cache(config["cache"]).manifest
    torch.manual_seed(0)
    model = prepare_model(preset_student(config["student"], manifest, seed=0))
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    loss_cfg = LossConfig(kind=config["loss"], alpha=config["alpha"])
    shard = ray.train.get_dataset_shard("train")
    rank = ray.train.get_context().get_world_rank()
    seen = []
    for epoch in range(config["epochs"]):
        for batch in iter_distill_batches(
            shard, batch_size=config["batch_size"], top_k=manifest.top_k,
            rs_samples=manifest.rs_samples,
        ):  # fmt: skip
            seen.append({"epoch": epoch, "ids": batch.pop("sample_id")})
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            loss, metrics = compute_loss(logits, batch, loss_cfg, vocab_size=manifest.vocab_size)
            opt.zero_grad()
            loss.backward()
            opt.step()
        ray.train.report({"epoch": epoch, "loss": float(loss.detach()), "kd": float(metrics["kd"])})
    if config.get("record"):
        with open(os.path.join(config["record"], f"seen-{rank}.json"), "w") as fh:
            json.dump(seen, fh)
    if rank == 0:
        unwrapped = model.module if hasattr(model, "module") else model
        unwrapped.save_pretrained(os.path.join(config["out"], "student"))


def main(argv=None) -> dict:
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from logitcache.data import ray_dataset
    from logitcache.integrations.ray_train import ExactlyOnceDataConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--student", default="tiny")
    p.add_argument("--loss", default="kl_tail")
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--record", default=None, help="directory for per-worker sample-id logs")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cache": os.path.abspath(args.cache) if "://" not in args.cache else args.cache,
            "out": os.path.abspath(args.out),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "student": args.student,
            "loss": args.loss,
            "alpha": args.alpha,
            "lr": args.lr,
            "record": args.record,
        },  # fmt: skip
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpu),
        datasets={"train": ray_dataset(args.cache)},
        dataset_config=ExactlyOnceDataConfig(),
    )
    result = trainer.fit()
    return {"out": args.out, "metrics": dict(result.metrics or {})}


if __name__ == "__main__":
    print(json.dumps(main()))
