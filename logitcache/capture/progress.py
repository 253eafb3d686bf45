"""Build progress: a tqdm bar (tokens/s, ETA) in a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class Progress:
    """Counts committed tokens/rows/units against the planned totals."""

    def __init__(
        self, *, total_tokens: int, total_units: int, mode: str = "auto", interval_s: float = 15.0
    ):
        self.total_tokens = total_tokens
        self.total_units = total_units
        self.tokens = 0
        self.rows = 0
        self.units = 0
        self.bytes = 0
        self.start = time.perf_counter()
        self.first_commit: float | None = None
        self.interval_s = interval_s
        self._last_log = self.start
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.log_lines = mode in ("auto", "log") and not use_bar
        self.bar = None
        if use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total_tokens, unit="tok", unit_scale=True, desc="capture", dynamic_ncols=True
            )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, *, tokens: int, rows: int, nbytes: int) -> None:
        self.tokens += tokens
        self.rows += rows
        self.units += 1
        self.bytes += nbytes
        now = time.perf_counter()
        if self.first_commit is None:
            self.first_commit = now
        if self.bar is not None:
            self.bar.update(tokens)
            self.bar.set_postfix(units=f"{self.units}/{self.total_units}", refresh=False)
        if self.log_lines and (
            now - self._last_log >= self.interval_s or self.units == self.total_units
        ):
            self._last_log = now
            rate = self.tokens / max(self.elapsed, 1e-9)
            left = (self.total_tokens - self.tokens) / rate if rate > 0 else float("nan")
            log.info(
                "capture: %d/%d units, %d/%d tokens (%.1f%%), %.0f tok/s, ETA %.0f s",
                self.units,
                self.total_units,
                self.tokens,
                self.total_tokens,
                100.0 * self.tokens / max(self.total_tokens, 1),
                rate,
                left,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
