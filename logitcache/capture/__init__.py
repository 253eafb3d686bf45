"""Teacher capture: ``build_cache(CaptureConfig(...))`` and ``logitcache build``.

- :mod:`.stages`: the stage code (tokenize -> teacher top-k -> encode + write) and its
  picklable specs;
- :mod:`.executors`: where stages run (in-process or Ray), chosen once per run;
- :mod:`.driver`: the one write path (lease, codec, skip committed units, commit, progress,
  statistics) that ``build`` (:mod:`.corpus_job`) and ``generate`` share;
- :mod:`.plan`: a corpus -> deterministic units;
- :mod:`.options`: the config sections (teacher, labels, packing, run, output) that
  :mod:`.config` composes into ``CaptureConfig`` (and ``generate`` into ``GenerateConfig``).
"""

from logitcache.capture.config import CaptureConfig, WriteConfig
from logitcache.capture.corpus_job import build_cache
from logitcache.capture.options import (
    LabelOptions,
    OutputOptions,
    PackingOptions,
    RunOptions,
    TeacherOptions,
)

__all__ = [
    "CaptureConfig",
    "LabelOptions",
    "OutputOptions",
    "PackingOptions",
    "RunOptions",
    "TeacherOptions",
    "WriteConfig",
    "build_cache",
]
