"""Teacher capture: ``build_cache(CaptureConfig(...))`` and ``logitcache build``.

Stages (read -> tokenize -> teacher top-k -> encode -> commit) live in :mod:`.stages`; the
in-process and Ray schedulers in :mod:`.runners` share them; :mod:`.build` drives a run.
"""

from logitcache.capture.build import build_cache
from logitcache.capture.config import CaptureConfig

__all__ = ["CaptureConfig", "build_cache"]
