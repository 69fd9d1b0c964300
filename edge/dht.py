"""DHT11/DHT22 temperature and humidity: rate limiting, retries and plausibility around a device.

A device is anything with adafruit_dht's interface: `.temperature` and `.humidity` properties
(reading either one triggers the physical measurement; both come from the same one within 2 s)
that raise RuntimeError on the frequent checksum and timing failures, and `.exit()` to release
the pin. On a Pi that is `adafruit_dht.DHT22(board.D4)` (see `hardware_device`); in the
simulation backend it is `sim.dht.SimulatedDhtDevice`. The logic here is the same for both.

Why each rule exists:
- at most one physical read per `min_interval_s`: the sensor needs 2 s between conversions
  (DHT22; 1 s for DHT11) and the adafruit driver silently returns the previous values when asked
  sooner, so a faster retry would only re-read stale data;
- retries: a single bit-banged read on a Linux Pi fails often (the kernel preempts the timing);
- range and step filters: a read that passes the checksum can still be garbage (a flipped high
  bit); a real cabin does not change 5 degC or 15 %RH within a few seconds. With no recent
  accepted reading to compare with (start-up, after a long run of failures) a read is only
  accepted once a second read agrees with it (`confirm_first`), so a spike cannot be the first
  value published.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("smartcity.edge.dht")

# (temperature range degC, humidity range %RH) from the datasheets
RANGES = {
    "dht22": ((-40.0, 80.0), (0.0, 100.0)),
    "dht11": ((0.0, 50.0), (20.0, 90.0)),
}


class DhtUnavailableError(ImportError):
    """The hardware backend cannot be used on this machine (libraries or board missing).
    Deliberately not a RuntimeError: that is what a failed read raises, and this must not be
    retried as one."""


@dataclass
class DhtStats:
    reads_ok: int = 0         # physical reads accepted
    read_errors: int = 0      # physical reads that raised or returned nothing
    implausible: int = 0      # physical reads rejected by the range or step filter
    retries: int = 0          # extra attempts after a failed or rejected read
    cached: int = 0           # read() calls answered from the cache (inside min_interval_s)
    unconfirmed: int = 0      # reads held back until a second read agrees (no recent reference)
    failed: int = 0           # read() calls that ended without any plausible value
    reinits: int = 0          # device re-created after an unexpected error

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DhtReading:
    temperature_c: float
    humidity_pct: float
    read_at_s: float          # clock() time of the physical read
    cached: bool = False      # True when served from the cache, not a new physical read


@dataclass
class _Filter:
    temp_range: tuple[float, float]
    hum_range: tuple[float, float]
    max_step_c: float
    max_step_pct: float
    step_window_s: float


def plausibility(temperature_c: Any, humidity_pct: Any, last: DhtReading | None, now_s: float,
                 flt: _Filter) -> str | None:
    """Why this read is not believable, or None. Pure: the reader's filter, testable alone."""
    if temperature_c is None or humidity_pct is None:
        return "no value"
    try:
        t, h = float(temperature_c), float(humidity_pct)
    except (TypeError, ValueError):
        return f"not a number: {temperature_c!r}/{humidity_pct!r}"
    if not (flt.temp_range[0] <= t <= flt.temp_range[1]):
        return f"temperature {t} outside {flt.temp_range}"
    if not (flt.hum_range[0] <= h <= flt.hum_range[1]):
        return f"humidity {h} outside {flt.hum_range}"
    if last is not None and now_s - last.read_at_s <= flt.step_window_s:
        if abs(t - last.temperature_c) > flt.max_step_c:
            return f"temperature jumped {t - last.temperature_c:+.1f} in {now_s - last.read_at_s:.1f}s"
        if abs(h - last.humidity_pct) > flt.max_step_pct:
            return f"humidity jumped {h - last.humidity_pct:+.1f} in {now_s - last.read_at_s:.1f}s"
    return None


class DhtReader:
    """read() -> DhtReading | None. Thread-safe; never raises for a sensor failure (it counts it)."""

    def __init__(self, device_factory: Callable[[], Any], model: str = "dht22",
                 min_interval_s: float | None = None, retries: int = 3,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 stats: DhtStats | None = None, max_step_c: float = 5.0,
                 max_step_pct: float = 15.0, step_window_s: float = 10.0,
                 max_cache_age_s: float = 60.0, confirm_first: bool = True):
        model = model.lower()
        if model not in RANGES:
            raise ValueError(f"model must be one of {sorted(RANGES)}, got {model!r}")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.model = model
        self.min_interval_s = (2.0 if model == "dht22" else 1.0) if min_interval_s is None \
            else float(min_interval_s)
        self.retries = retries
        self.stats = stats if stats is not None else DhtStats()
        self.max_cache_age_s = max_cache_age_s
        self.confirm_first = confirm_first
        self._pending: DhtReading | None = None
        self._filter = _Filter(*RANGES[model], max_step_c, max_step_pct, step_window_s)
        self._factory = device_factory
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_ok: DhtReading | None = None
        self._last_physical_s: float | None = None
        # Construct now: a wrong pin or missing library is a configuration error for the caller.
        self._device = device_factory()

    @property
    def last(self) -> DhtReading | None:
        return self._last_ok

    def read(self) -> DhtReading | None:
        with self._lock:
            now = self._clock()
            if self._last_physical_s is not None and now - self._last_physical_s < self.min_interval_s:
                self.stats.cached += 1
                return self._cached(now)
            for attempt in range(self.retries + 1):
                if attempt:
                    self.stats.retries += 1
                    wait = self.min_interval_s - (self._clock() - self._last_physical_s)
                    if wait > 0:
                        self._sleep(wait)
                reading = self._attempt()
                if reading is not None:
                    return reading
            self.stats.failed += 1
            log.warning("dht: no plausible reading", extra={"attempts": self.retries + 1,
                                                           "stats": self.stats.as_dict()})
            return None

    def close(self) -> None:
        with self._lock:
            self._exit_device()

    # --- internals ---

    def _cached(self, now: float) -> DhtReading | None:
        last = self._last_ok
        if last is None or now - last.read_at_s > self.max_cache_age_s:
            return None
        return DhtReading(last.temperature_c, last.humidity_pct, last.read_at_s, cached=True)

    def _attempt(self) -> DhtReading | None:
        now = self._clock()
        self._last_physical_s = now
        try:
            if self._device is None:
                self._device = self._factory()
                self.stats.reinits += 1
            temperature = self._device.temperature
            humidity = self._device.humidity
        except RuntimeError as e:  # checksum, short buffer, sensor not found: try again later
            self.stats.read_errors += 1
            log.debug("dht read failed", extra={"error": str(e)})
            return None
        except Exception as e:  # not a timing glitch: release the pin, re-create next time
            self.stats.read_errors += 1
            log.warning("dht device error, re-initialising", extra={"error": repr(e)})
            self._exit_device()
            return None
        if temperature is None or humidity is None:
            self.stats.read_errors += 1
            log.debug("dht read returned no value")
            return None
        window = self._filter.step_window_s
        ref = self._last_ok
        if ref is not None and now - ref.read_at_s > window:
            ref = None
        why = plausibility(temperature, humidity, ref, now, self._filter)
        if why is not None:
            self.stats.implausible += 1
            log.info("dht read rejected", extra={"reason": why})
            return None
        reading = DhtReading(float(temperature), float(humidity), now)
        if ref is None and self.confirm_first:
            pending, self._pending = self._pending, reading
            if pending is None or now - pending.read_at_s > window or \
                    plausibility(temperature, humidity, pending, now, self._filter) is not None:
                self.stats.unconfirmed += 1
                log.debug("dht read held back until a second read agrees")
                return None
        self._pending = None
        self.stats.reads_ok += 1
        self._last_ok = reading
        return reading

    def _exit_device(self) -> None:
        dev, self._device = self._device, None
        if dev is not None:
            try:
                dev.exit()
            except Exception as e:  # releasing a broken device must not break the reader
                log.debug("dht exit failed", extra={"error": repr(e)})


def hardware_device(model: str, pin: str, use_pulseio: bool = True):
    """The real sensor through Adafruit Blinka: hardware_device("dht22", "D4").

    Imports adafruit_dht and board only here, so the agent runs without them (simulation, CI)."""
    model_l = model.lower()
    if model_l not in RANGES:
        raise ValueError(f"model must be one of {sorted(RANGES)}, got {model!r}")
    hint = ("the DHT hardware backend needs adafruit-circuitpython-dht and adafruit-blinka "
            "(pip install '.[pi]') and libgpiod on a Raspberry Pi")
    try:
        import adafruit_dht  # type: ignore[import-not-found]
    except ImportError as e:
        raise DhtUnavailableError(f"cannot import adafruit_dht: {e}; {hint}") from e
    try:
        import board  # type: ignore[import-not-found]
    except Exception as e:  # Blinka raises NotImplementedError/RuntimeError off a supported board
        raise DhtUnavailableError(f"cannot import board (Blinka): {e!r}; {hint}") from e
    pin_name = pin.upper()
    if pin_name.isdigit():
        pin_name = "D" + pin_name
    elif pin_name.startswith("GPIO"):
        pin_name = "D" + pin_name[4:]
    board_pin = getattr(board, pin_name, None)
    if board_pin is None:
        raise ValueError(f"unknown pin {pin!r} (looked for board.{pin_name})")
    cls = adafruit_dht.DHT22 if model_l == "dht22" else adafruit_dht.DHT11
    # use_pulseio=False bit-bangs from Python instead of Blinka's libgpiod pulse helper: slower and
    # more error-prone, but a way out where the helper does not run.
    return cls(board_pin, use_pulseio=use_pulseio)
