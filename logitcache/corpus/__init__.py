"""Corpus ingestion: files -> documents -> tokens -> packed rows -> deterministic units.

Each step is a plain function or small class so that capture can run it in-process or inside
Ray tasks without changing it: :func:`expand_sources` and :func:`read_documents` (driver,
cheap), :func:`tokenize_documents` (CPU tasks), :class:`UnitPlanner` (driver, deterministic).
"""

from logitcache.corpus.readers import (
    FORMATS,
    INVALID_UTF8_MODES,
    Document,
    ReadStats,
    read_documents,
)
from logitcache.corpus.sources import SourceFile, expand_sources
from logitcache.corpus.tokenize import TokenizedDoc, tokenize_documents
from logitcache.corpus.units import PACKING_MODES, PackingConfig, PlanStats, Row, Unit, UnitPlanner

__all__ = [
    "FORMATS",
    "INVALID_UTF8_MODES",
    "PACKING_MODES",
    "Document",
    "PackingConfig",
    "PlanStats",
    "ReadStats",
    "Row",
    "SourceFile",
    "TokenizedDoc",
    "Unit",
    "UnitPlanner",
    "expand_sources",
    "read_documents",
    "tokenize_documents",
]
