"""``StudentObjective``: the student's forward pass and its loss as one module.

One module, because that is what DDP wraps: its ``forward(batch)`` runs the model and the loss,
so the gradient all-reduce sees every parameter whichever path computes the logits. With
``LossConfig.impl == "fused"`` (the default) a transformers causal LM runs only its body
(``model.base_model``: embeddings, blocks, final norm) and the output layer
(``model.get_output_embeddings()``) is applied inside :func:`~logitcache.losses.fused_loss`,
chunk by chunk, so the ``[B, T, V]`` logits are never built, in training or evaluation.

The fused path assumes the logits are ``hidden @ W.T + b``, optionally soft-capped
(``config.final_logit_softcapping``). That is checked once, on a few positions, against the
model's own forward; a student whose logits are transformed any other way is refused with the
fix (``--loss-impl dense``) rather than trained on a different function.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from logitcache.errors import ConfigError
from logitcache.losses import (
    LossConfig,
    compute_loss,
    cross_entropy,
    fused_loss,
    fused_position_metrics,
    kl_tail,
    rs_kd,
)
from logitcache.losses.acceptance import acceptance_bounds

log = logging.getLogger(__name__)

_PROBE_POSITIONS = 8


class StudentObjective(torch.nn.Module):
    """``forward(batch) -> (loss, metrics)`` for a causal-LM student, dense or fused."""

    def __init__(
        self, model: torch.nn.Module, loss: LossConfig, *, vocab_size: int, cross: Any = None
    ):
        super().__init__()
        self.model = model
        self.loss = loss
        self.vocab_size = vocab_size
        self.cross = cross  # a CrossTokenizerSetup: ULD / GOLD on the student's own ids
        self.fused = loss.impl == "fused"
        self.softcap: float | None = None
        if self.fused:
            self.softcap = check_fusable(model)

    def _parts(self):
        head = self.model.get_output_embeddings()
        return self.model.base_model, head.weight, getattr(head, "bias", None)

    def hidden(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        body = self._parts()[0]
        out = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out[0]  # last_hidden_state, after the final norm

    def forward(self, batch: Mapping[str, torch.Tensor]):
        if not self.fused:
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            if self.cross is not None:
                return self.cross.loss(logits, batch, self.loss)
            return compute_loss(logits, batch, self.loss, vocab_size=self.vocab_size)
        _, weight, bias = self._parts()
        if self.cross is not None:  # chunked over positions: one [chunk, V] block at a time
            return self.cross.loss_from_hidden(
                self.hidden(batch), weight, bias, batch, self.loss, softcap=self.softcap
            )
        return fused_loss(
            self.hidden(batch),
            weight,
            batch,
            self.loss,
            bias=bias,
            vocab_size=self.vocab_size,
            softcap=self.softcap,
        )

    @torch.no_grad()
    def position_metrics(self, batch: Mapping[str, torch.Tensor], kind: str, alpha: bool = False):
        """Per target position at T=1: the ``kind`` loss, CE and the student's argmax; with
        ``alpha`` (``kl_tail`` only) the speculative-acceptance bounds ``alpha_lower`` /
        ``alpha_upper`` from the top-k + tail (:mod:`logitcache.losses.acceptance`)."""
        if self.fused:
            _, weight, bias = self._parts()
            return fused_position_metrics(
                self.hidden(batch),
                weight,
                batch,
                kind=kind,
                bias=bias,
                vocab_size=self.vocab_size,
                chunk_size=self.loss.chunk_size,
                softcap=self.softcap,
                alpha=alpha,
            )
        logits = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        mask = batch["labels"] != -100
        z = logits[mask].float()
        if kind == "rs_kd":
            kd = rs_kd(z, batch["rs_ids"][mask], batch["rs_weights"][mask])
        else:
            kd = kl_tail(
                z,
                batch["topk_ids"][mask],
                batch["topk_logprobs"][mask],
                batch["tail_logmass"][mask],
                vocab_size=self.vocab_size,
            )
        out = {"kd": kd, "ce": cross_entropy(z, batch["labels"][mask]), "argmax": z.argmax(-1)}
        if alpha:
            if kind != "kl_tail":
                raise ConfigError(f"acceptance bounds need kind='kl_tail', got {kind!r}")
            out["alpha_lower"], out["alpha_upper"] = acceptance_bounds(
                z,
                batch["topk_ids"][mask],
                batch["topk_logprobs"][mask],
                batch["tail_logmass"][mask],
            )
        return out


def check_fusable(model: torch.nn.Module) -> float | None:
    """The soft-cap the fused path must apply (None: plain linear head), or ConfigError.

    Checks that the model is a body plus a linear output layer, and that its own logits on a
    few positions equal the output layer applied to the body's last hidden state.
    """
    name = type(model).__name__
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "base_model", model)
    weight = getattr(head, "weight", None)
    if weight is None or weight.dim() != 2 or body is model:
        raise ConfigError(
            f"student {name} has no separate body and linear output layer "
            "(base_model + get_output_embeddings()), so the fused loss cannot apply; "
            "train it with --loss-impl dense"
        )
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    bias = getattr(head, "bias", None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ids = torch.arange(_PROBE_POSITIONS, device=weight.device)[None] % weight.shape[0]
            full = model(input_ids=ids).logits.float()
            h = body(input_ids=ids)[0].float()
            z = h @ weight.float().t()
            if bias is not None:
                z = z + bias.float()
            if softcap:
                z = torch.tanh(z / softcap) * softcap
    finally:
        model.train(was_training)
    scale = float(full.abs().max()) + 1e-6
    err = float((full - z).abs().max())
    if full.shape != z.shape or err > 1e-3 * scale:
        raise ConfigError(
            f"student {name}'s logits are not its output layer applied to the last hidden "
            f"state (max difference {err:.3g} on a probe; a logit transform such as a scale "
            "the fused path does not know), so the fused loss would train a different "
            "function; train it with --loss-impl dense"
        )
    if softcap:
        log.info("fused loss: applying the student's final logit soft-cap %g", softcap)
    return float(softcap) if softcap else None
