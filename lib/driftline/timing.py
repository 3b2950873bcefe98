"""Seconds per phase of a long step, for its log line.

    laps = Laps()
    fit(...); laps.lap("fit")
    log_run(...); laps.lap("MLflow run")
    log.info("train: %s", laps)   # "12.3s: fit 9.1s, MLflow run 3.2s"
"""

from __future__ import annotations

import time


class Laps:
    """Wall seconds per named phase since the previous lap (a repeated name adds up)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 3)
        self._last = now

    @property
    def total(self) -> float:
        return sum(self.laps.values())

    def __str__(self) -> str:
        return f"{self.total:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.laps.items())
