"""The transformers teacher: one model loaded once, scoring batches of token-id rows.

``score`` right-pads a list of variable-length rows, runs one forward pass per group of rows
(at most ``max_batch_tokens`` padded tokens), and turns the logits of each row's real positions
into top-k / tail mass / sampled draws on the device that holds the output layer, fused in place
on each chunk's logits (:mod:`logitcache.teachers.soft_labels`).

Memory: for Llama-family models, whose causal-LM head is a plain ``lm_head(hidden)``, the
backbone runs alone and the head is applied per row in chunks of positions, so the dense
``[B, T, V]`` logits tensor never exists (at V=49k and 16k tokens it would be 3 GiB in fp32).
Other architectures (logit soft-capping, scaled logits, remote code) run the full forward and
are post-processed in the same chunks.

Batching invariance: each row is processed on its own, in position chunks whose size depends
only on V, with a ``torch.Generator`` seeded by that row's seed; so a row gets the same draws
whether it is scored alone or in any batch (up to fp rounding in the backbone's padded matmuls,
which can flip a draw only when a uniform lands within ~1e-7 of a CDF boundary).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from logitcache.errors import ConfigError, TeacherError
from logitcache.teachers import gguf_cache
from logitcache.teachers.config import IN_PROCESS, TeacherConfig, check_label_counts
from logitcache.teachers.identity import hub_commit, teacher_identity
from logitcache.teachers.resolve import ResolvedTeacher, load_failure, resolve_teacher
from logitcache.teachers.soft_labels import pad_width, soft_labels

log = logging.getLogger(__name__)

# Causal LMs whose logits are exactly lm_head(final hidden state): safe to apply the head per
# chunk of positions ourselves.
HEAD_ONLY_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "olmo2"}
)
CHUNK_BYTES = 256 << 20  # fp32 logits per position chunk (post-processing works in place on them)
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TeacherError(
            f"device {device!r} requested but CUDA is not available here; use device='cpu' "
            "or 'auto'."
        )
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, *, gguf: bool) -> str:
    """The dtype name the weights will have: see :class:`TeacherConfig`."""
    if gguf:
        if dtype not in ("auto", "float32"):
            log.info("GGUF weights are dequantised to float32; casting to %s after loading", dtype)
            return dtype
        return "float32"
    if dtype != "auto":
        return dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def _location(cfg: TeacherConfig, resolved: ResolvedTeacher) -> tuple[str, dict[str, Any]]:
    """``from_pretrained`` target and keyword arguments; GGUF files go through the one-time
    conversion cache (:mod:`logitcache.teachers.gguf_cache`)."""
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision is not None and not resolved.local:
        kwargs["revision"] = cfg.revision
    if not resolved.gguf_file:
        return resolved.source, kwargs
    if gguf_cache.enabled():
        try:
            return str(gguf_cache.converted_dir(resolved.source, resolved.gguf_file)), kwargs
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise load_failure(resolved, "GGUF weights", exc) from exc
    return resolved.source, {**kwargs, **resolved.pretrained_kwargs()}


def load_hf_tokenizer(cfg: TeacherConfig, resolved: ResolvedTeacher | None = None):
    """The teacher's tokenizer (no weights)."""
    from transformers import AutoTokenizer

    resolved = resolved or resolve_teacher(cfg.teacher)
    try:
        source, kwargs = _location(cfg, resolved)
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise load_failure(resolved, "tokenizer", exc) from exc


def load_hf_config(cfg: TeacherConfig, resolved: ResolvedTeacher | None = None):
    from transformers import AutoConfig

    resolved = resolved or resolve_teacher(cfg.teacher)
    try:
        source, kwargs = _location(cfg, resolved)
        return AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise load_failure(resolved, "config", exc) from exc


def _local_dir(resolved: ResolvedTeacher, cfg: TeacherConfig) -> str:
    """Directory holding the weight files (the hub cache snapshot for hub ids)."""
    if resolved.local:
        return resolved.source
    from transformers.utils import cached_file

    config_path = cached_file(resolved.source, "config.json", revision=cfg.revision)
    return str(config_path).rsplit("/", 1)[0]


def hf_identity(cfg: TeacherConfig, resolved: ResolvedTeacher, dtype: str) -> dict[str, Any]:
    weights_dir = _local_dir(resolved, cfg)
    return teacher_identity(
        name=cfg.teacher,
        source=resolved.source,
        weights_dir=weights_dir,
        gguf_file=resolved.gguf_file,
        revision=hub_commit(weights_dir) if not resolved.local else cfg.revision,
        dtype=dtype,
        backend="transformers",
    )


def describe_hf(cfg: TeacherConfig) -> dict[str, Any]:
    """Identity and logits width without loading weights (config + weight-file hashes)."""
    resolved = resolve_teacher(cfg.teacher)
    config = load_hf_config(cfg, resolved)
    dtype = resolve_dtype(cfg.dtype, resolve_device(cfg.device), gguf=bool(resolved.gguf_file))
    vocab = getattr(config, "vocab_size", None) or config.get_text_config().vocab_size
    return {"identity": hf_identity(cfg, resolved, dtype), "vocab_size": int(vocab)}


def spread_kwargs(cfg: TeacherConfig, device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` arguments that spread a replica of several GPUs over the first
    ``tensor_parallel x pipeline_parallel`` visible GPUs (under Ray: exactly the replica's)."""
    gpus = cfg.tensor_parallel * cfg.pipeline_parallel
    if gpus == 1:
        return {}
    if device.type != "cuda":
        log.info("a %d-GPU replica was asked for on %s: loading on %s alone", gpus, device, device)
        return {}
    visible = torch.cuda.device_count()
    if visible < gpus:
        raise TeacherError(
            f"a teacher replica of {gpus} GPUs was asked for, but this process sees {visible} "
            "(CUDA_VISIBLE_DEVICES); lower --gpus-per-teacher / --pipeline-parallel."
        )
    # Layers in order over the GPUs (accelerate's pipeline split), never spilled to the CPU.
    memory = {i: int(torch.cuda.mem_get_info(i)[0] * 0.9) for i in range(gpus)}
    return {"device_map": "auto", "max_memory": memory}


class HFTeacher:
    """A transformers causal LM that scores rows into cache payloads."""

    replica_layout = IN_PROCESS  # a multi-GPU replica: every GPU in this process

    def __init__(self, cfg: TeacherConfig):
        from transformers import AutoModelForCausalLM

        self.config = cfg
        self.resolved = resolve_teacher(cfg.teacher)
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device, gguf=bool(self.resolved.gguf_file))
        self.tokenizer = load_hf_tokenizer(cfg, self.resolved)
        source, kwargs = _location(cfg, self.resolved)
        kwargs.update(spread_kwargs(cfg, self.device))
        load_dtype = torch.float32 if self.resolved.gguf_file else _TORCH_DTYPES[self.dtype]
        try:
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    source,
                    dtype=load_dtype,
                    attn_implementation=cfg.attn_implementation,
                    **kwargs,
                )
            except ValueError as exc:
                if "attn" not in str(exc).lower() and "sdpa" not in str(exc).lower():
                    raise
                log.warning(
                    "%s does not support attn_implementation=%r; using 'eager'",
                    cfg.teacher,
                    cfg.attn_implementation,
                )
                model = AutoModelForCausalLM.from_pretrained(
                    source, dtype=load_dtype, attn_implementation="eager", **kwargs
                )
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise load_failure(self.resolved, "model", exc) from exc
        if "device_map" in kwargs:
            # Inputs go to the embeddings' GPU; the output layer's GPU computes the soft labels.
            self.device = model.get_input_embeddings().weight.device
            model = model.to(dtype=_TORCH_DTYPES[self.dtype]).eval()
        else:
            model = model.to(device=self.device, dtype=_TORCH_DTYPES[self.dtype]).eval()
        self.model = model
        head = model.get_output_embeddings()
        self.vocab_size = int(head.weight.shape[0]) if head is not None else model.config.vocab_size
        self.embedding_rows = int(model.get_input_embeddings().weight.shape[0])
        self._head_only = self._can_split_head(model)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = (
                self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
            )
        self.identity = hf_identity(cfg, self.resolved, self.dtype)
        self.chunk_positions = max(1, CHUNK_BYTES // (4 * self.vocab_size))
        log.info(
            "loaded teacher %s (%s, %s on %s, logits width %d)",
            cfg.teacher,
            self.resolved.kind,
            self.dtype,
            self.device,
            self.vocab_size,
        )

    @staticmethod
    def _can_split_head(model) -> bool:
        config = model.config
        return (
            config.model_type in HEAD_ONLY_MODEL_TYPES
            and getattr(config, "final_logit_softcapping", None) is None
            and getattr(config, "logit_scale", None) is None
            and hasattr(model, "model")
            and model.get_output_embeddings() is not None
        )

    # -- batching --------------------------------------------------------------------------
    def _check_rows(self, rows: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i, row in enumerate(rows):
            arr = np.asarray(row)
            if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
                raise ConfigError(
                    f"row {i}: input_ids must be a non-empty 1-D integer array, got shape "
                    f"{arr.shape} dtype {arr.dtype}."
                )
            if arr.min() < 0 or arr.max() >= self.embedding_rows:
                raise ConfigError(
                    f"row {i}: token ids must lie in [0, {self.embedding_rows}) for teacher "
                    f"{self.config.teacher!r}; was the corpus tokenized with another tokenizer?"
                )
            out.append(arr.astype(np.int64, copy=False))
        return out

    def _groups(self, lengths: list[int]) -> list[list[int]]:
        """Consecutive rows whose padded size fits ``max_batch_tokens`` (a row alone always)."""
        groups: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i, n in enumerate(lengths):
            if current and max(longest, n) * (len(current) + 1) > self.config.max_batch_tokens:
                groups.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, n)
        if current:
            groups.append(current)
        return groups

    def _pad(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.from_numpy(r)
            mask[j, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _hidden_or_logits(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, bool]:
        """[B, T, H] final hidden states (head applied later), or [B, T, V] logits."""
        ids, mask = self._pad(rows)
        if self._head_only:
            out = self.model.model(input_ids=ids, attention_mask=mask, use_cache=False)
            return out.last_hidden_state, True
        return self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits, False

    def _logits(self, states: torch.Tensor, is_hidden: bool) -> torch.Tensor:
        """Position chunk of hidden states (head applied here) or logits -> logits [n, V]."""
        return self.model.get_output_embeddings()(states) if is_hidden else states

    def _logprobs(self, states: torch.Tensor, is_hidden: bool) -> torch.Tensor:
        """Position chunk of hidden states or logits -> fp32 log-probs [n, V]."""
        return torch.log_softmax(self._logits(states, is_hidden).float(), dim=-1)

    # -- public ----------------------------------------------------------------------------
    @torch.inference_mode()
    def score(
        self,
        input_ids: Sequence[np.ndarray],
        *,
        top_k: int,
        rs_samples: int = 0,
        seeds: Sequence[int] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """One payload dict per row (see the module docstring and the cache contract)."""
        check_label_counts(top_k, rs_samples, self.vocab_size)
        rows = self._check_rows(input_ids)
        if seeds is None or len(seeds) != len(rows):
            raise ConfigError(
                f"score() needs one seed per row: got {0 if seeds is None else len(seeds)} seeds "
                f"for {len(rows)} rows."
            )
        results: list[dict[str, np.ndarray]] = [None] * len(rows)  # type: ignore[list-item]
        for group in self._groups([len(r) for r in rows]):
            states, is_hidden = self._hidden_or_logits([rows[i] for i in group])
            for j, i in enumerate(group):
                results[i] = self._score_row(
                    states[j, : len(rows[i])], is_hidden, top_k, rs_samples, int(seeds[i])
                )
        return results

    def _score_row(self, states, is_hidden, top_k, rs_samples, seed) -> dict[str, np.ndarray]:
        gen = None
        parts: list = []
        for start in range(0, states.shape[0], self.chunk_positions):
            logits = self._logits(states[start : start + self.chunk_positions], is_hidden)
            if rs_samples and gen is None:
                # On the device of the output layer (the last one under device_map="auto").
                gen = torch.Generator(device=logits.device)
                gen.manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)
            parts.append(soft_labels(logits, top_k, rs_samples=rs_samples, generator=gen))
        out = {
            "topk_ids": torch.cat([p.topk_ids for p in parts]).cpu().numpy(),
            "topk_logprobs": torch.cat([p.topk_logprobs for p in parts]).cpu().numpy(),
            "tail_logmass": torch.cat([p.tail_logmass for p in parts]).cpu().numpy(),
        }
        if rs_samples:
            width = max(p.rs_ids.shape[1] for p in parts)
            out["rs_ids"] = torch.cat(pad_width([p.rs_ids for p in parts], width)).cpu().numpy()
            out["rs_counts"] = (
                torch.cat(pad_width([p.rs_counts for p in parts], width)).cpu().numpy()
            )
        return out

    @torch.inference_mode()
    def forward_logprobs(self, input_ids: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Dense fp32 log-probs [T_i, V] per row on the CPU (references, fidelity benchmarks)."""
        rows = self._check_rows(input_ids)
        out: list[torch.Tensor] = [None] * len(rows)  # type: ignore[list-item]
        for group in self._groups([len(r) for r in rows]):
            states, is_hidden = self._hidden_or_logits([rows[i] for i in group])
            for j, i in enumerate(group):
                out[i] = self._logprobs(states[j, : len(rows[i])], is_hidden).cpu()
        return out

    @torch.inference_mode()
    def bare_forward(self, input_ids: Sequence[np.ndarray], *, chunked_head: bool = False) -> int:
        """The throughput reference for capture, on the same batches as :meth:`score`.

        Default: plain ``model(ids, mask).logits``. ``chunked_head=True``: the same forward as
        :meth:`score` (backbone, then the output layer per row in position chunks) without
        any post-processing, so the difference to :meth:`score` is exactly what capture adds.
        Returns the number of real tokens."""
        rows = self._check_rows(input_ids)
        for group in self._groups([len(r) for r in rows]):
            group_rows = [rows[i] for i in group]
            if chunked_head:
                states, is_hidden = self._hidden_or_logits(group_rows)
                for j, r in enumerate(group_rows):
                    row = states[j, : len(r)]
                    for start in range(0, row.shape[0], self.chunk_positions):
                        chunk = row[start : start + self.chunk_positions]
                        logits = self.model.get_output_embeddings()(chunk) if is_hidden else chunk
                last = logits
            else:
                ids, mask = self._pad(group_rows)
                last = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            if last.device.type == "cuda":
                torch.cuda.synchronize(last.device)
        return int(sum(len(r) for r in rows))
