"""Which clock stamps a record.

A Raspberry Pi has no real-time clock: after a boot without network its system clock starts from
the last shutdown (fake-hwclock) or 1970. So: trust the system clock only when the kernel says it is
synchronised (adjtimex), otherwise carry the last GPS time forward on the monotonic clock, and if
there is no GPS time yet, stamp with the system clock but say so (clock="unsynced").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

_TIME_ERROR = 5  # adjtimex() return value: clock not synchronised


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long),
                ("tolerance", ctypes.c_long), ("time_sec", ctypes.c_long),
                ("time_usec", ctypes.c_long), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11)]


def system_clock_synchronised() -> bool:
    """True when the kernel reports an NTP-disciplined clock. False where that cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.adjtimex(ctypes.byref(_Timex())) not in (-1, _TIME_ERROR)
    except (OSError, AttributeError):
        return False


class TimeSource:
    """now() -> (aware UTC datetime, clock name) for records that carry no time of their own."""

    def __init__(self, synchronised: Callable[[], bool] = system_clock_synchronised,
                 recheck_s: float = 30.0, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self._synchronised = synchronised
        self._recheck_s = recheck_s
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._gps_anchor: tuple[datetime, float] | None = None
        self._sync_state = (False, float("-inf"))

    def on_gps_time(self, ts: datetime) -> None:
        """Anchor GPS time (an aware UTC datetime from a fix) to the monotonic clock."""
        with self._lock:
            self._gps_anchor = (ts, self._monotonic())

    def _is_synced(self) -> bool:
        ok, checked = self._sync_state
        now = self._monotonic()
        if now - checked >= self._recheck_s:
            ok = bool(self._synchronised())
            self._sync_state = (ok, now)
        return ok

    def now(self) -> tuple[datetime, str]:
        with self._lock:
            if self._is_synced():
                return datetime.fromtimestamp(self._wall(), tz=timezone.utc), "system"
            if self._gps_anchor is not None:
                ts, at = self._gps_anchor
                return ts + timedelta(seconds=self._monotonic() - at), "gps"
        return datetime.fromtimestamp(self._wall(), tz=timezone.utc), "unsynced"
