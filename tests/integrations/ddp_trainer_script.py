"""Run by torchrun in test_transformers_trainer.py: two epochs of DistillationTrainer on 2 gloo
ranks; each rank writes the sample ids of its micro-batches, by epoch."""

import json
import sys
from pathlib import Path

from transformers import TrainingArguments

from logitcache.format import open_cache
from logitcache.integrations.transformers import DistillationTrainer
from logitcache.losses import LossConfig
from logitcache.train.student import preset_student


class Recording(DistillationTrainer):
    seen: list = []

    def compute_loss(self, model, inputs, *a, **kw):
        if model.training:
            self.seen.append({"epoch": self.train_batches.epoch, "ids": list(inputs["sample_id"])})
        return super().compute_loss(model, inputs, *a, **kw)


def main(cache: str, out: str) -> None:
    args = TrainingArguments(
        out, num_train_epochs=2, per_device_train_batch_size=3, logging_steps=1, report_to=[],
        use_cpu=True, save_strategy="no", disable_tqdm=True, ddp_backend="gloo",
    )  # fmt: skip
    student = preset_student("tiny", open_cache(cache).manifest, seed=0)
    trainer = Recording(model=student, args=args, cache=cache, loss=LossConfig(alpha=0.1))
    trainer.train()
    rank = trainer.args.process_index
    params = sum(float(p.double().sum()) for p in trainer.model.parameters())
    record = {"seen": trainer.seen, "params": params, "fused": trainer.fused}
    Path(out, f"seen-{rank}.json").write_text(json.dumps(record))
    trainer.save_model(str(Path(out) / "student"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
