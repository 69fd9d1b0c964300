"""Rate-limited log lines for errors that can repeat once per reading.

A broker that refuses every reading, a full queue or a full SD card would otherwise write one line
per reading (tens per second, for days) to the very disk that is full. LogLimiter lets the first
line of each distinct error through, then at most one per `every_s` seconds; the next line that
gets through carries `suppressed` (how many identical lines were held back since the last one).
The metrics count every occurrence; the log is for a human to notice and look.

Neither the standard library (logging has no throttling filter) nor the pinned dependencies
(paho-mqtt, pyserial, pynmea2) provide this.

    limiter = LogLimiter(log, every_s=60)
    limiter.error("broker rejected reading", key=reason, extra={"seq": row.seq})
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Mapping


class LogLimiter:
    """At most one line per (message, key) per `every_s` seconds, with a count of the suppressed
    repeats. Thread-safe. Remembers at most `max_keys` distinct errors (least recently seen are
    forgotten, so an unexpected flood of distinct keys cannot grow memory)."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0, max_keys: int = 256,
                 monotonic: Callable[[], float] = time.monotonic):
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.logger = logger
        self.every_s = every_s
        self.max_keys = max_keys
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # (msg, key) -> [monotonic time of the last emitted line, repeats suppressed since]
        self._state: OrderedDict[tuple[str, Hashable], list] = OrderedDict()

    def log(self, level: int, msg: str, key: Hashable = None,
            extra: Mapping[str, Any] | None = None) -> bool:
        """Log unless the same (msg, key) was logged less than every_s ago. True if logged."""
        now = self._monotonic()
        k = (msg, key)
        with self._lock:
            st = self._state.get(k)
            if st is not None and now - st[0] < self.every_s:
                st[1] += 1
                self._state.move_to_end(k)
                return False
            suppressed = st[1] if st is not None else 0
            self._state[k] = [now, 0]
            self._state.move_to_end(k)
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)
        fields = dict(extra or {})
        fields["repeat_log_every_s"] = self.every_s
        if suppressed:
            fields["suppressed"] = suppressed
        self.logger.log(level, msg, extra=fields)
        return True

    def error(self, msg: str, key: Hashable = None, extra: Mapping[str, Any] | None = None) -> bool:
        return self.log(logging.ERROR, msg, key, extra)

    def warning(self, msg: str, key: Hashable = None, extra: Mapping[str, Any] | None = None) -> bool:
        return self.log(logging.WARNING, msg, key, extra)

    def suppressed(self, msg: str, key: Hashable = None) -> int:
        """Repeats of (msg, key) held back since its last line (0 if none or unknown)."""
        with self._lock:
            st = self._state.get((msg, key))
            return st[1] if st else 0
