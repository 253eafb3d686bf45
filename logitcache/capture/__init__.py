"""Teacher capture: ``build_cache(CaptureConfig(...))`` and ``logitcache build``.

- :mod:`.stages`: the stage code (tokenize -> teacher top-k -> encode + write) and its
  picklable specs;
- :mod:`.executors`: where stages run (in-process or Ray), chosen once per run;
- :mod:`.driver`: the one write path (lease, codec, skip committed units, commit, progress,
  statistics) that ``build`` (:mod:`.corpus_job`) and ``generate`` share;
- :mod:`.plan`: a corpus -> deterministic units.
"""

from logitcache.capture.config import CaptureConfig
from logitcache.capture.corpus_job import build_cache

__all__ = ["CaptureConfig", "build_cache"]
