"""Poll an OBD-II vehicle through an ELM327, and survive ignition cycles and unplugs.

Per connection: ATZ + configuration, supported-PID discovery (0100 / 0120 / 0140, following the
chain bits), then each cycle asks only for supported PIDs. The VIN is read once per connection
(mode 09 PID 02) and cached.

Ignition rule (decides the polling back-off, documented for operators):
  the car is considered *asleep* in a cycle when
    - no engine PID was answered at all (every request gave NO DATA / UNABLE TO CONNECT /
      BUS INIT error: the ECU is not on the bus), or
    - the engine is not turning (rpm 0 or unknown) and battery_v < 12.8 V (a charging system
      holds 13.2-14.7 V; a resting battery is 12.0-12.7 V).
  While asleep the polling interval doubles from interval_s up to idle_max_s; the first awake
  cycle restores interval_s. battery_v comes from PID 42 when the ECU answers it, else from
  the adapter's own ATRV (pin 16), which works with the ECU asleep.

Adapter loss (serial error, port gone, no prompt, not an ELM) closes the port and reconnects
with capped exponential backoff plus jitter, until `stop` is set. Nothing here raises out of
run().
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Callable

from . import pids
from .elm327 import AdapterError, AdapterReset, AdapterWasReset, Elm327, ElmError, NoData
from .pids import DecodeError

log = logging.getLogger(__name__)

ASLEEP_BELOW_V = 12.8
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
IDLE_MAX_S = 30.0
VIN_ATTEMPTS = 3   # per connection, when the VIN request fails for a transient reason


@dataclass
class ObdStats:
    """Counters the agent exports (plain values; `connected`/`asleep` are gauges)."""
    reads_ok: int = 0           # PID requests answered with a decodable value
    no_data: int = 0            # NO DATA replies
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0           # no prompt within the timeout
    reconnects: int = 0         # successful re-initialisations after a loss
    cycles: int = 0             # read_once cycles completed
    callback_errors: int = 0
    connected: bool = False
    asleep: bool = False
    last_cycle_s: float | None = None   # duration of the last read_once

    def error(self, kind: str) -> None:
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1

    def as_dict(self) -> dict:
        # built field by field: asdict() iterates errors_by_kind in Python, which races with the
        # reader thread adding a kind; dict() copies it in one step under the GIL
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["errors_by_kind"] = dict(self.errors_by_kind)
        return d


def empty_reading() -> dict:
    return {f: None for f in pids.FIELDS}


def is_asleep(reading: dict, ecu_silent: bool) -> bool:
    """The ignition rule above, as a pure function."""
    if ecu_silent:
        return True
    rpm, volts = reading.get("rpm"), reading.get("battery_v")
    return not rpm and volts is not None and volts < ASLEEP_BELOW_V


class ObdReader:
    def __init__(self, port: str, baud: int = 38400, timeout_s: float = 2.0,
                 stats: ObdStats | None = None, *, reset_timeout_s: float = 5.0,
                 search_timeout_s: float = 15.0, idle_max_s: float = IDLE_MAX_S,
                 backoff_min_s: float = BACKOFF_MIN_S, backoff_max_s: float = BACKOFF_MAX_S):
        if not port:
            raise ValueError("OBD port path is empty")
        self.port, self.baud, self.timeout_s = port, int(baud), timeout_s
        self.stats = stats if stats is not None else ObdStats()
        self.elm = Elm327(port, self.baud, timeout_s, reset_timeout_s, search_timeout_s)
        self.idle_max_s = idle_max_s
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.supported: set[int] | None = None   # None: not discovered yet (ECU asleep)
        self.vin: str | None = None
        self._vin_done = False
        self._vin_attempts = 0
        self._last_error: ElmError | None = None
        self.last_ecu_silent = False
        self.current_interval_s: float | None = None
        self._answers = 0   # OBD requests the ECU answered in the current cycle
        self._rng = random.Random()

    # -- connection ----------------------------------------------------------------------------
    def connect(self) -> None:
        """Open and initialise the adapter. Raises AdapterError (port closed again) on failure."""
        self.close()
        self.elm.open()
        try:
            banner = self.elm.initialise()
        except ElmError as e:  # '?' to an AT command etc.: not usable as an ELM327
            self.close()
            raise AdapterError(f"OBD adapter on {self.port} rejected initialisation: {e}") from e
        except AdapterError:
            self.close()
            raise
        self.supported, self.vin, self._vin_done, self._vin_attempts = None, None, False, 0
        self.stats.connected = True
        log.info("obd: adapter ready", extra={"banner": banner, "port": self.port, "baud": self.baud})

    def close(self) -> None:
        self.elm.close()
        self.stats.connected = False

    # -- one cycle -----------------------------------------------------------------------------
    def _query(self, command: str) -> list[bytes] | None:
        """Send one OBD request; ECU-level errors are counted and give None."""
        self._last_error = None
        try:
            msgs = self.elm.query(command)
            self._answers += 1
            return msgs
        except NoData as e:
            self._last_error = e
            self.stats.no_data += 1
        except AdapterReset as e:
            self.close()
            raise AdapterWasReset(f"OBD adapter reset itself ({e}); re-initialising") from e
        except ElmError as e:
            self._last_error = e
            self.stats.error(e.kind)
            log.debug("obd: no answer", extra={"command": command, "error": str(e)})
        return None

    def discover(self) -> bool:
        """Fill self.supported from the bitmap chain. False if the ECU did not answer 0100."""
        found: set[int] = set()
        for base in pids.SUPPORT_PIDS:
            if base and base not in found:
                break
            msgs = self._query(pids.BITMAPS[base].command)
            if msgs is None:
                if base == 0:
                    return False
                break
            try:
                found |= pids.supported_pids(base, msgs)
            except DecodeError as e:
                self.stats.error(e.kind)
                log.warning("obd: cannot decode the supported PIDs", extra={"error": str(e)})
                if base == 0:
                    return False
                break
        self.supported = found
        skipped = sorted(p for p in pids.MODE01 if p not in found)
        log.info("obd: supported PIDs", extra={"pids": " ".join(f"{p:02X}" for p in sorted(found)),
                                                "not_asked": " ".join(f"{p:02X}" for p in skipped)})
        return True

    def read_once(self) -> dict:
        """One reading of every field (None when unsupported or failed).

        Connects first if needed. Raises AdapterError when the adapter cannot be used.
        """
        t0 = time.monotonic()
        if not self.elm.is_open:
            self.connect()
        out = empty_reading()
        self._answers = 0
        if self.supported is None:
            self.discover()
        if self.supported is not None:
            for pid in pids.MODE01.values():
                if pid.pid not in self.supported:
                    continue
                msgs = self._query(pid.command)
                if msgs is None:
                    if self._answers == 0 and self.last_ecu_silent:
                        break  # still asleep: one request per cycle is enough to know
                    continue
                try:
                    out[pid.field] = pids.decode(pid, msgs)
                    self.stats.reads_ok += 1
                except DecodeError as e:
                    self.stats.error(e.kind)
                    log.warning("obd: cannot decode a reply", extra={"field": pid.field, "error": str(e)})
            if self._answers and not self._vin_done:
                self._read_vin()
        ecu_silent = self._answers == 0
        if out["battery_v"] is None:
            try:
                out["battery_v"] = self.elm.voltage()
            except ElmError as e:
                self.stats.error("atrv_" + e.kind)
        out["vin"] = self.vin
        self.last_ecu_silent = ecu_silent
        self.stats.cycles += 1
        self.stats.last_cycle_s = time.monotonic() - t0
        return out

    def _read_vin(self) -> None:
        # Only asked while the ECU answers, so NO DATA here means "no VIN on this car" and ends
        # the attempts for this connection; a bus error gets VIN_ATTEMPTS tries.
        self._vin_attempts += 1
        msgs = self._query(pids.VIN_COMMAND)
        if msgs is None:
            if isinstance(self._last_error, NoData) or self._vin_attempts >= VIN_ATTEMPTS:
                self._vin_done = True
            return
        self._vin_done = True
        try:
            self.vin = pids.decode_vin(msgs)
            self.stats.reads_ok += 1
        except DecodeError as e:
            self.stats.error("vin")
            log.warning("obd: cannot decode the VIN", extra={"error": str(e)})

    # -- loop ----------------------------------------------------------------------------------
    def _jitter(self, delay: float) -> float:
        # jitter keeps a restart loop (or many vehicles after a depot power cut) out of lockstep
        return delay * (0.5 + self._rng.random() * 0.5)

    def run(self, stop: threading.Event, on_reading: Callable[[dict], None],
            interval_s: float = 1.0) -> None:
        """Poll until `stop`; on_reading gets every cycle's dict, asleep cycles included."""
        delay = self.backoff_min_s
        connected_once = False
        wait_s = interval_s
        while not stop.is_set():
            try:
                if not self.elm.is_open:
                    self.connect()
                    if connected_once:
                        self.stats.reconnects += 1
                    connected_once = True
                    delay = self.backoff_min_s
                t0 = time.monotonic()
                reading = self.read_once()
            except AdapterError as e:
                if e.kind == "timeout":
                    self.stats.timeouts += 1
                else:
                    self.stats.error(e.kind)
                log.warning("obd: adapter lost; reconnecting", extra={"error": str(e), "delay_s": round(delay, 1)})
                self.close()
                self.stats.asleep = False
                stop.wait(self._jitter(delay))
                delay = min(delay * 2, self.backoff_max_s)
                continue
            except Exception:  # a bug must not kill the sensor thread; count it and reset
                self.stats.error("internal")
                log.exception("obd: unexpected error; reconnecting")
                self.close()
                stop.wait(self._jitter(delay))
                delay = min(delay * 2, self.backoff_max_s)
                continue
            try:
                on_reading(reading)
            except Exception:
                self.stats.callback_errors += 1
                log.exception("obd: on_reading callback failed")
            asleep = is_asleep(reading, self.last_ecu_silent)
            if asleep and not self.stats.asleep:
                log.info("obd: vehicle asleep; backing off", extra={
                    "rpm": reading["rpm"], "battery_v": reading["battery_v"],
                    "ecu_silent": self.last_ecu_silent})
            self.stats.asleep = asleep
            wait_s = max(interval_s, min(wait_s * 2, self.idle_max_s)) if asleep else interval_s
            self.current_interval_s = wait_s
            stop.wait(max(0.0, wait_s - (time.monotonic() - t0)))
        self.close()
