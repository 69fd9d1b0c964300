"""Simulated time that runs `speedup` times faster than the wall clock.

Every simulated record carries simulated time, so a 2 h trip replayed at --speedup 60 takes two
minutes and still shows a 2 h trip downstream. `speedup=inf` never sleeps: simulated time then
advances only through sleep_until (as fast as the consumer can go).
"""
from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable


class SimClock:
    def __init__(self, start_utc: datetime, speedup: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if start_utc.tzinfo is None:
            raise ValueError("start_utc must be timezone-aware")
        if not speedup > 0:  # also rejects NaN
            raise ValueError(f"speedup must be > 0, got {speedup!r}")
        self.start_utc = start_utc.astimezone(timezone.utc)
        self.speedup = float(speedup)
        self._monotonic = monotonic
        self._sleep = sleep
        self._wall0 = monotonic()
        self._lock = threading.Lock()
        self._virtual = self.start_utc  # latest time reached with speedup=inf

    @property
    def unpaced(self) -> bool:
        return math.isinf(self.speedup)

    def elapsed_s(self) -> float:
        """Simulated seconds since start."""
        if self.unpaced:
            with self._lock:
                return (self._virtual - self.start_utc).total_seconds()
        return (self._monotonic() - self._wall0) * self.speedup

    def now(self) -> datetime:
        if self.unpaced:
            with self._lock:
                return self._virtual
        return self.start_utc + timedelta(seconds=self.elapsed_s())

    def wall_delay_s(self, sim_ts: datetime) -> float:
        """Wall seconds until the simulated clock shows sim_ts (negative: already past)."""
        if self.unpaced:
            return 0.0
        return (sim_ts - self.now()).total_seconds() / self.speedup

    def sleep_until(self, sim_ts: datetime, stop: threading.Event | None = None) -> bool:
        """Block until simulated time reaches sim_ts. Returns False if `stop` was set first.
        Being behind (a slow consumer) never sleeps and never raises: the caller simply catches up."""
        if sim_ts.tzinfo is None:
            raise ValueError("sim_ts must be timezone-aware")
        if self.unpaced:
            with self._lock:
                if sim_ts > self._virtual:
                    self._virtual = sim_ts
            return not (stop and stop.is_set())
        delay = self.wall_delay_s(sim_ts)
        if delay > 0:
            if stop is not None:
                return not stop.wait(delay)
            self._sleep(delay)
        return not (stop and stop.is_set())
