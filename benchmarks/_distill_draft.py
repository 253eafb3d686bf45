"""The distilled student as a speculative-decoding draft model, and distill-then-quantize.

Assisted generation is transformers' own (``teacher.generate(..., assistant_model=student)``,
greedy, a constant ``gamma`` drafts per round, the assistant's confidence stop disabled).
transformers keeps the number of accepted drafts per round in a local of its decoding loop
(``n_matches`` in ``GenerationMixin._assisted_decoding``, 5.x) and reports none of it, so we
count rounds from the outside: every round is exactly one forward of the target model (the
first one also prefills the prompt), counted by a forward hook. Tokens per round = new tokens /
target forwards; accepted drafts per round = that minus the teacher's own token. A round cut
short by ``max_new_tokens`` or EOS lowers the figure slightly (one round per prompt at most).

Quantisation: ``torch.ao.quantization.quantize_dynamic`` (int8 weights, activations quantised
on the fly) of every ``nn.Linear``, the tied output layer included; embeddings stay float. It
runs on CPU only, so the quantised student is evaluated on CPU.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
import warnings
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)


@contextmanager
def count_forwards(model: torch.nn.Module):
    """Counts calls of ``model.forward`` inside the block (``counter[0]``)."""
    counter = [0]

    def hook(*_):
        counter[0] += 1

    handle = model.register_forward_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def prompts_from_heldout(held, *, count: int, length: int) -> list[torch.Tensor]:
    """``count`` prompts of ``length`` held-out tokens: the start of every row long enough,
    then windows further into the rows (every ``2 * length`` tokens), so a small held-out
    set still yields enough prompts; every window leaves room for a continuation."""
    out: list[torch.Tensor] = []
    rows, width = held.input_ids.shape
    lengths = held.attention_mask.sum(-1).tolist()
    for offset in range(0, width, 2 * length) if count > 0 else ():
        for r in range(rows):
            if int(lengths[r]) > offset + length:
                out.append(held.input_ids[r : r + 1, offset : offset + length].clone())
            if len(out) == count:
                return out
    return out


def _generate(target, prompt, *, new_tokens: int, assistant=None) -> torch.Tensor:
    kwargs = dict(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=target.generation_config.pad_token_id or 0,
    )
    if assistant is not None:
        kwargs["assistant_model"] = assistant
    with torch.inference_mode():
        return target.generate(**kwargs)


def teacher_alone(teacher_model, prompts, *, new_tokens: int) -> dict:
    """Greedy decoding by the teacher alone: outputs and seconds per prompt (the reference)."""
    device = teacher_model.device
    _generate(teacher_model, prompts[0].to(device), new_tokens=2)  # warm-up
    outputs, seconds = [], []
    for p in prompts:
        t0 = time.perf_counter()
        out = _generate(teacher_model, p.to(device), new_tokens=new_tokens)
        _sync(device)
        seconds.append(time.perf_counter() - t0)
        outputs.append(out[0, p.shape[1] :].cpu())
    return {"outputs": outputs, "seconds": seconds}


def assisted(teacher_model, student, prompts, reference: dict, *, new_tokens: int, gamma: int = 4):
    """Assisted generation with ``student`` drafting ``gamma`` tokens per round for the teacher:
    tokens and accepted drafts per round, wall-time speedup over :func:`teacher_alone`, and
    the share of prompts whose output equals the teacher's own greedy output."""
    device = teacher_model.device
    student = student.to(device).eval()
    cfg = student.generation_config
    cfg.num_assistant_tokens = gamma
    cfg.num_assistant_tokens_schedule = "constant"
    cfg.assistant_confidence_threshold = 0.0  # draft all gamma tokens every round
    _generate(teacher_model, prompts[0].to(device), new_tokens=2, assistant=student)  # warm-up
    rounds = generated = same = 0
    seconds = []
    for p, ref in zip(prompts, reference["outputs"]):
        with count_forwards(teacher_model) as calls:
            t0 = time.perf_counter()
            out = _generate(teacher_model, p.to(device), new_tokens=new_tokens, assistant=student)
            _sync(device)
            seconds.append(time.perf_counter() - t0)
        new = out[0, p.shape[1] :].cpu()
        rounds += calls[0]
        generated += new.numel()
        same += int(torch.equal(new, ref))
    per_round = generated / max(1, rounds)
    return {
        "prompts": len(prompts),
        "new_tokens": generated,
        "gamma": gamma,
        "rounds": rounds,
        "tokens_per_round": per_round,
        "accepted_per_round": per_round - 1,
        "acceptance_rate": (per_round - 1) / gamma,
        "teacher_s": sum(reference["seconds"]),
        "assisted_s": sum(seconds),
        "speedup": sum(reference["seconds"]) / max(sum(seconds), 1e-9),
        "speedup_median": statistics.median(
            t / a for t, a in zip(reference["seconds"], seconds) if a > 0
        ),
        "same_output": same / len(prompts),
    }


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy of ``model`` with int8 dynamic quantisation of every ``nn.Linear``."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            copy.deepcopy(model).cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8
        )


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as stored (packed int8 weights included)."""
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
