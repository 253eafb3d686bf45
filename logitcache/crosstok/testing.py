"""Second tokenizers for tests and benchmarks: trained here with ``tokenizers``, no download.

``kind="bytelevel"`` is a GPT-2-style byte-level BPE (like the teachers'), ``kind="metaspace"``
a SentencePiece-style BPE (``▁`` for spaces, no prefix space, ``<unk>`` for characters it
never saw: its pieces do not spell every text, so alignment falls back to its character
offsets); both use their own special tokens ``<s>``, ``</s>``, ``<pad>``, so nothing about
them matches a teacher's by id. Trained on ``texts`` (default: Python's documentation, present on every machine).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def make_student_tokenizer(
    path: str | Path,
    *,
    vocab_size: int = 384,
    kind: str = "bytelevel",
    texts: Iterable[str] | None = None,
):
    """Train a BPE student tokenizer and ``save_pretrained`` it to ``path``; return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        from pydoc_data.topics import topics

        texts = [topics[k] for k in sorted(topics)]
    specials = [BOS, EOS, PAD]
    if kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif kind == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
        tok.decoder = decoders.Metaspace(prepend_scheme="never")
        specials = specials + ["<unk>"]
        alphabet = []
    else:
        raise ValueError(f"kind must be 'bytelevel' or 'metaspace', got {kind!r}")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token="<unk>" if kind == "metaspace" else None,
        model_max_length=1 << 16,
    )
    Path(path).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    return fast
