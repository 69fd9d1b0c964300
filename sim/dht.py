"""A DHT22/DHT11 that behaves like adafruit_dht's device object, fed by the weather model.

Same interface and the same awkward habits as the real driver, so `edge.dht.DhtReader` is
exercised exactly as on a Pi:
- reading `.temperature` or `.humidity` triggers one measurement; within the sensor's minimum
  interval (2 s DHT22, 1 s DHT11) the previous values are returned without measuring;
- a measurement fails with RuntimeError at a configurable rate (checksum, short buffer);
- now and then a measurement passes but is garbage (a flipped high bit), which only the reader's
  plausibility filter can catch;
- values are quantised like the sensor's (0.1 for DHT22, whole numbers for DHT11).
"""
from __future__ import annotations

import random
from datetime import datetime
from typing import Callable

from .weather import WeatherModel

_FAILURES = ("Checksum did not validate. Try again.",
             "A full buffer was not returned. Try again.",
             "Received unplausible data. Try again.")


class SimulatedDhtDevice:
    def __init__(self, weather: WeatherModel,
                 now_and_position: Callable[[], tuple[datetime, float, float]],
                 seed: int = 0, error_rate: float = 0.05, spike_rate: float = 0.01,
                 model: str = "dht22", monotonic: Callable[[], float] | None = None):
        if not (0.0 <= error_rate <= 1.0 and 0.0 <= spike_rate <= 1.0):
            raise ValueError("error_rate and spike_rate must be within [0, 1]")
        model = model.lower()
        if model not in ("dht22", "dht11"):
            raise ValueError(f"model must be dht22 or dht11, got {model!r}")
        self.model = model
        self.weather = weather
        self.now_and_position = now_and_position
        self.error_rate = error_rate
        self.spike_rate = spike_rate
        self.min_interval_s = 2.0 if model == "dht22" else 1.0
        # The sensor lives in simulated time: its minimum interval is counted on the simulated
        # clock unless a clock is given (tests), so a reader pacing itself on simulated time
        # (SimClock.elapsed_s) sees fresh measurements at any --speedup.
        self._monotonic = monotonic or (lambda: self.now_and_position()[0].timestamp())
        self._rng = random.Random(f"{seed}:dht")
        self._last_called: float | None = None
        self._temperature: float | None = None
        self._humidity: float | None = None
        self._released = False
        # what actually happened, for tests to check the reader's counters against
        self.measurements = 0
        self.failures_injected = 0
        self.spikes_injected = 0

    @property
    def temperature(self) -> float | None:
        self._measure()
        return self._temperature

    @property
    def humidity(self) -> float | None:
        self._measure()
        return self._humidity

    def exit(self) -> None:
        self._released = True

    def _measure(self) -> None:
        if self._released:  # what the adafruit driver does after exit(): the pin is gone
            raise ValueError("Object has been deinitialized and can no longer be used.")
        now = self._monotonic()
        if self._last_called is not None and now - self._last_called < self.min_interval_s:
            return
        self._last_called = now
        self.measurements += 1
        rng = self._rng
        if rng.random() < self.error_rate:
            self.failures_injected += 1
            raise RuntimeError(rng.choice(_FAILURES))
        ts, lat, lon = self.now_and_position()
        w = self.weather.at(ts, lat, lon)
        # sensor noise well inside the datasheet accuracy (DHT22: +-0.5 degC, +-2 %RH)
        t = w["temperature_c"] + rng.gauss(0.0, 0.15)
        h = min(max(w["humidity_pct"] + rng.gauss(0.0, 0.8), 0.0), 100.0)
        if rng.random() < self.spike_rate:
            self.spikes_injected += 1
            if rng.random() < 0.5:
                t += 25.6          # bit 8 of the 0.1 degC word flipped: in range, but a jump
            else:
                h = 6553.5         # all-ones humidity word: out of range
        if self.model == "dht22":
            self._temperature, self._humidity = round(t, 1), round(h, 1)
        else:
            # the DHT11 saturates at the ends of its 20-90 %RH range instead of reporting beyond it
            self._temperature, self._humidity = float(round(t)), float(round(min(max(h, 20), 90)))
