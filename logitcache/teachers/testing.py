"""Tiny real models for tests, benchmarks and demos.

``make_tiny_llama`` writes a random-weight ``LlamaForCausalLM`` plus a small byte-level BPE
tokenizer trained on Python's own documentation (``pydoc_data.topics``, present on every
machine) with ``save_pretrained``, so every code path that loads a teacher from a directory can
run in milliseconds without a hub download. Everything is seeded: the same arguments give the
same files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from logitcache.teachers.hf import HFTeacher

log = logging.getLogger(__name__)

BOS = "<|endoftext|>"
EOS = "<|im_end|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"

# ChatML like SmolLM2's template, with {% generation %} markers around assistant content so
# ``apply_chat_template(..., return_assistant_tokens_mask=True)`` finds assistant spans.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus_lines() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def make_tiny_tokenizer(path: str | Path, *, vocab_size: int = 512):
    """Train a byte-level BPE (``vocab_size`` entries, special tokens included) and save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BOS, EOS, PAD, IM_START]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))
    return fast


def make_tiny_llama(
    path: str | Path,
    *,
    vocab_size: int = 512,
    extra_logits: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    max_position_embeddings: int = 4096,
    head_scale: float = 1.0,
) -> Path:
    """Write a tiny random Llama teacher + tokenizer to ``path``; return the path.

    ``extra_logits`` pads the logits width beyond the tokenizer size (as many real models do),
    so code that must distinguish ``vocab_size`` (logits width) from ``len(tokenizer)`` can be
    tested. Weights use a larger init range than the default so the distributions are peaked
    enough for top-k and sampling tests to be meaningful. ``head_scale`` multiplies the output
    layer: at large widths (150k+ logits) a tiny model's distribution is otherwise nearly flat.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = make_tiny_tokenizer(path, vocab_size=vocab_size)
    width = len(tok) + extra_logits
    config = LlamaConfig(
        vocab_size=width,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
        if head_scale != 1.0:
            with torch.no_grad():
                model.get_output_embeddings().weight.mul_(head_scale)
    model.save_pretrained(str(path))
    log.info("wrote tiny llama (vocab %d, logits %d) to %s", len(tok), width, path)
    return path


RECORD_DIR_ENV = "LOGITCACHE_RECORD_TEACHERS"


class RecordingTeacher(HFTeacher):
    """A transformers teacher that also writes down how and where it was started: its
    parallel configuration, the GPUs Ray gave it (``ray.get_gpu_ids()``,
    ``CUDA_VISIBLE_DEVICES``), its node and placement group, as
    ``$LOGITCACHE_RECORD_TEACHERS/<pid>.json``. It scores like the transformers backend (on
    the CPU when the GPUs are only declared), so placement tests on clusters without real GPUs
    run the whole build: ``backend="logitcache.teachers.testing:RecordingTeacher"``.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self.record = placement_record(cfg)
        self._write_record()

    def close(self) -> None:
        """Records that the executor released this teacher (``"closed": true``)."""
        self.record["closed"] = True
        self._write_record()

    def _write_record(self) -> None:
        where = os.environ.get(RECORD_DIR_ENV)
        if where:
            os.makedirs(where, exist_ok=True)
            with open(os.path.join(where, f"{os.getpid()}.json"), "w") as fh:
                json.dump(self.record, fh)


def placement_record(cfg) -> dict:
    """What a teacher process was given: parallel configuration, GPUs, node, placement group."""
    record = {
        "pid": os.getpid(),
        "tensor_parallel": cfg.tensor_parallel,
        "pipeline_parallel": cfg.pipeline_parallel,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    import ray

    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        record["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
        record["node_id"] = ctx.get_node_id()
        record["placement_group"] = ctx.get_placement_group_id()
    return record
