"""Read a GPS receiver on a serial port and survive it being unplugged.

The pure pipeline (framer -> decoder -> fix builder) does the work; this module only owns the
port: open it, read with a short timeout, notice that it went away (read error, or the device
path vanished or now points to another device, as when a USB receiver is re-plugged and
udev recreates /dev/ttyUSB0 or /dev/serial/by-id/...), and reopen it with capped exponential
backoff plus jitter, until `stop` is set.

Reads are gathered: after the first byte of a burst arrives the reader waits `gather_s` (50 ms)
and then takes everything the tty holds, so it wakes, parses and hands over fixes at most ~20
times a second however the bytes trickle in (a 9600-baud UART delivers a cycle over ~400 ms).
The bytes wait in the kernel's tty buffer meanwhile (4 KiB; 50 ms at 115200 baud is 576 bytes),
so nothing is lost, and each fix is still reported with the receiver's own time. The fixes of one
read are delivered inside `batch()` (the agent passes `Recorder.batch`: one queue transaction,
one fsync, for all of them).
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Callable

import serial

from .fix import Fix, FixBuilder
from .framing import NmeaFramer
from .sentences import Decoder

log = logging.getLogger(__name__)

BAUD_RATES = (4800, 9600, 19200, 38400, 57600, 115200)
READ_TIMEOUT_S = 0.1
# how often the device path is checked while the port reads fine (a vanished tty node can
# keep an open fd readable, e.g. a pty whose symlink was removed)
PATH_CHECK_S = 0.5
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
GATHER_S = 0.05   # wait this long after the first byte of a burst, then read all that is there


@dataclass
class GpsStats:
    """Counters the agent exports (Prometheus counters, except last_fix_monotonic)."""
    sentences_ok: int = 0
    checksum_errors: int = 0
    garbage_lines: int = 0        # framer rejections: noise, non-printable, over-long lines
    unknown_sentences: int = 0    # unknown types and unparseable lines
    field_errors: int = 0
    ignored_sentences: int = 0    # known but unused (GSV, TXT, proprietary)
    reopen_count: int = 0
    fixes: int = 0
    cycles_incomplete: int = 0
    callback_errors: int = 0
    internal_errors: int = 0
    bytes_read: int = 0
    connected: bool = False
    last_fix_monotonic: float | None = None   # time.monotonic() of the last fix with a position

    def as_dict(self) -> dict:
        return asdict(self)


def validate_baud(baud: int) -> int:
    if baud not in BAUD_RATES:
        raise ValueError(f"GPS baud rate {baud!r} not supported; use one of {BAUD_RATES}")
    return baud


class GpsReader:
    def __init__(self, port: str, baud: int = 9600,
                 on_fix: Callable[[Fix], None] | None = None,
                 stats: GpsStats | None = None, gather_s: float = GATHER_S,
                 batch: Callable[[], AbstractContextManager] = nullcontext) -> None:
        if not port:
            raise ValueError("GPS port path is empty")
        if on_fix is None:
            raise ValueError("on_fix callback is required")
        self.port = port
        self.baud = validate_baud(int(baud))
        self.on_fix = on_fix
        self.stats = stats if stats is not None else GpsStats()
        self.gather_s = gather_s
        self._batch = batch   # wraps the delivery of one read's fixes (module docstring)
        self._framer = NmeaFramer()
        self._decoder = Decoder()
        self._builder = FixBuilder()
        self._incomplete_before = 0
        self._rng = random.Random()

    @property
    def last_fix_monotonic(self) -> float | None:
        return self.stats.last_fix_monotonic

    # -- pure part: bytes in, callbacks out --------------------------------------------------
    def process(self, data: bytes) -> int:
        """Feed raw bytes; calls on_fix for each completed fix. Returns the number of fixes."""
        decode, bfeed = self._decoder.decode, self._builder.feed
        n = 0
        for line in self._framer.feed(data):
            s = decode(line)
            if s is None:
                continue
            for fix in bfeed(s):
                n += 1
                self._deliver(fix)
        self.stats.bytes_read += len(data)
        self._sync_stats()
        return n

    def _deliver(self, fix: Fix) -> None:
        st = self.stats
        st.fixes += 1
        if fix.fix_mode >= 2:
            st.last_fix_monotonic = time.monotonic()
        try:
            self.on_fix(fix)
        except Exception:  # a consumer bug must not stop the GPS
            st.callback_errors += 1
            log.exception("gps: on_fix callback failed")

    def _process_batch(self, data: bytes) -> None:
        """process() inside batch(); a failure to store the fixes at the batch's end counts as a
        callback error (like a failing on_fix), not as bytes the parser choked on."""
        cm = self._batch()
        cm.__enter__()
        try:
            self.process(data)
        finally:
            try:
                cm.__exit__(None, None, None)
            except Exception:
                self.stats.callback_errors += 1
                log.exception("gps: storing the fixes failed")

    def _sync_stats(self) -> None:
        st, d, fr = self.stats, self._decoder, self._framer.rejected
        st.sentences_ok = d.sentences_ok
        st.checksum_errors = d.checksum_errors
        st.unknown_sentences = d.unknown_sentences + d.parse_errors
        st.field_errors = d.field_errors
        st.ignored_sentences = d.ignored_sentences + d.proprietary_sentences
        st.garbage_lines = fr["garbage"] + fr["too_long"] + fr["overflow"]
        st.cycles_incomplete = self._incomplete_before + self._builder.cycles_incomplete

    def _new_session(self) -> None:
        # A (re)connected receiver starts clean: the half line and half cycle from before the
        # unplug are meaningless, and it may be a different receiver with another date/order.
        self._framer.reset()
        self._incomplete_before += self._builder.cycles_incomplete
        self._builder = FixBuilder()

    # -- I/O ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        delay = BACKOFF_MIN_S
        first = True
        while not stop.is_set():
            ser = self._open()
            if ser is None:
                stop.wait(self._jitter(delay))
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if not first:
                self.stats.reopen_count += 1
            first = False
            self._new_session()
            self.stats.connected = True
            log.info("gps: reading", extra={"port": self.port, "baud": self.baud})
            got_data = self._read_until_lost(ser, stop)
            self.stats.connected = False
            try:
                ser.close()
            except Exception:  # closing a vanished device may fail; it is gone either way
                pass
            if stop.is_set():
                break
            if got_data:
                delay = BACKOFF_MIN_S
            stop.wait(self._jitter(delay))
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _jitter(self, delay: float) -> float:
        # jitter keeps several readers (or a restart loop) from retrying in lockstep
        return delay * (0.5 + self._rng.random() * 0.5)

    def _open(self) -> serial.Serial | None:
        try:
            return serial.Serial(self.port, self.baud, timeout=READ_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as e:
            log.debug("gps: cannot open the port", extra={"port": self.port, "error": str(e)})
            return None

    def _identity(self, st: os.stat_result) -> tuple[int, int, int]:
        return (st.st_dev, st.st_ino, st.st_rdev)

    def _read_until_lost(self, ser: serial.Serial, stop: threading.Event) -> bool:
        got_data = False
        try:
            opened = self._identity(os.fstat(ser.fileno()))
        except (OSError, serial.SerialException, AttributeError):
            opened = None
        next_check = time.monotonic() + PATH_CHECK_S
        while not stop.is_set():
            try:
                data = ser.read(ser.in_waiting or 1)
                if data and self.gather_s > 0:
                    # Let the rest of the burst (at high rates: the next cycles) arrive first.
                    stop.wait(self.gather_s)
                    more = ser.in_waiting
                    if more:
                        data += ser.read(more)
            except (serial.SerialException, OSError) as e:
                log.warning("gps: port lost", extra={"port": self.port, "error": str(e)})
                return got_data
            if data:
                got_data = True
                try:
                    self._process_batch(data)
                except Exception:  # a parser bug must cost these bytes, not the GPS thread
                    self.stats.internal_errors += 1
                    self._framer.reset()
                    log.exception("gps: failed to process bytes", extra={"bytes": len(data)})
            now = time.monotonic()
            if now >= next_check:
                next_check = now + PATH_CHECK_S
                try:
                    current = self._identity(os.stat(self.port))
                except OSError:
                    log.warning("gps: port vanished", extra={"port": self.port})
                    return got_data
                if opened is not None and current != opened:
                    log.warning("gps: port now points to another device", extra={"port": self.port})
                    return got_data
        return got_data
