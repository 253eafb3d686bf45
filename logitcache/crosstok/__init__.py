"""Cross-tokenizer distillation from a cache: a student with its own tokenizer.

The cache holds teacher token ids; this package spells them as bytes (``vocab``), retokenises
each row with the student's tokenizer and aligns teacher positions to student positions by
byte spans (``align``), and batches the teacher targets onto the student's positions
(``collate``). The losses are in :mod:`logitcache.losses.cross_tokenizer`; docs/cross-tokenizer.md
is the guide.
"""

from logitcache.crosstok.align import Aligned, Retokenizer
from logitcache.crosstok.collate import CrossTokenizerCollate
from logitcache.crosstok.vocab import (
    TokenTable,
    check_roundtrip,
    special_map,
    token_bytes,
    vocabulary_map,
)

__all__ = [
    "Aligned",
    "CrossTokenizerCollate",
    "Retokenizer",
    "TokenTable",
    "check_roundtrip",
    "special_map",
    "token_bytes",
    "vocabulary_map",
]
