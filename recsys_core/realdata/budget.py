"""Wall-clock budget and per-phase accounting (seconds, peak memory) for a benchmark run."""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class Budget:
    """Seconds allowed for the whole run. Optional phases get a share of the total, capped by
    what is left after ``reserve_s``: the measured cost of the work that must still happen."""

    total_s: float
    started: float = field(default_factory=time.perf_counter)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    reserve_s: float = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        return max(self.total_s - self.elapsed(), 0.0)

    def spare(self) -> float:
        """Seconds left once the reserve is kept."""
        return max(self.remaining() - self.reserve_s, 0.0)

    def allot(self, fraction_of_total: float) -> float:
        """``fraction_of_total`` of the whole budget, but never more than the spare time."""
        return min(fraction_of_total * self.total_s, self.spare())

    def can_afford(self, fraction_of_total: float) -> bool:
        """Whether an optional phase of this share still fits before the reserve."""
        return self.spare() >= fraction_of_total * self.total_s

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        logger.info("phase %s: start (elapsed %.0fs of %.0fs)", name, self.elapsed(), self.total_s)
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            self.phases[name] = {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}
            logger.info(
                "phase %s: %.1fs (elapsed %.0fs, %.0fs left, peak RSS %.0f MB)",
                name,
                seconds,
                self.elapsed(),
                self.remaining(),
                peak_rss_mb(),
            )
