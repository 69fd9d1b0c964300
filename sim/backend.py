"""The simulation backend: a deterministic Bangkok -> Pattaya trip, presented at the wire.

The trip drives three fake devices that look exactly like hardware to the agent:
- a GPS receiver writing real NMEA bytes to a pseudo-terminal (the real GPS driver reads it),
- an ELM327 adapter answering AT/OBD commands on a pseudo-terminal (the real OBD driver asks it),
- a DHT22 object with the adafruit driver's interface (the real DHT reader logic polls it).
Roadside cameras and city incidents are not vehicle sensors, so they arrive as callbacks.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
import tty
from datetime import datetime, timezone
from typing import Callable

from smartcity.sim.cameras import CameraNetwork
from smartcity.sim.clock import SimClock
from smartcity.sim.dht import SimulatedDhtDevice
from smartcity.sim.incidents import IncidentSimulator
from smartcity.sim.nmea import nmea_cycle
from smartcity.sim.trip import TripSimulator, VehicleState
from smartcity.sim.weather import WeatherModel

log = logging.getLogger("smartcity.sim")

DEFAULT_START_UTC = datetime(2026, 11, 28, 1, 0, 0, tzinfo=timezone.utc)  # 08:00 in Bangkok
DEFAULT_VIN = "MR0FZ29G801234567"
# The world wakes at most this often (wall time) and writes every cycle due by then at once.
MIN_TICK_S = 0.05
MAX_DUE_CYCLES = 8   # ~3 KB: written at once when that many are due (under a tty's 4 KiB buffer)


class NmeaPty:
    """The simulated receiver's serial line: a pty whose slave end the GPS driver opens."""

    def __init__(self):
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        self.path = os.ttyname(self.slave_fd)
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master_fd, view)
            view = view[n:]
        self.bytes_written += len(data)

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class SimWorld:
    """Runs the trip on the simulated clock and feeds the fake devices.

    `gps_rate_hz` is in simulated time; with `speedup` 10 and 10 Hz the pty sees 100 cycles per
    wall second and every fix still carries the simulated time.

    The world thread wakes at most once per `min_tick_s` of wall time (50 ms) and writes every
    cycle that is due by then in one write: at speedup 1 and up to 20 Hz that is one cycle per
    wake-up, as a receiver sends them; at speedup 10 and 10 Hz, five cycles every 50 ms instead
    of one every 10 ms (a wake-up of a sleeping thread costs more CPU than a cycle's NMEA).
    The agent's GPS reader gathers 50 ms of bytes per read anyway (edge/gps/reader.py).
    """

    def __init__(self, seed: int = 7, speedup: float = 1.0, gps_rate_hz: float = 1.0,
                 start_utc: datetime = DEFAULT_START_UTC, vin: str = DEFAULT_VIN,
                 on_traffic: Callable[[dict, datetime], None] | None = None,
                 on_emergency: Callable[[dict, datetime], None] | None = None,
                 dht_error_rate: float = 0.05, obd: bool = True,
                 nmea_corruption_rate: float = 0.0, min_tick_s: float = MIN_TICK_S):
        self.trip = TripSimulator(seed=seed, start_utc=start_utc)
        self.clock = SimClock(start_utc, speedup)
        self.dt_s = 1.0 / gps_rate_hz
        self.weather = WeatherModel(seed)
        self.cameras = CameraNetwork(self.trip.route, seed)
        self.incidents = IncidentSimulator(self.trip.route, seed)
        self.on_traffic = on_traffic or (lambda fields, ts: None)
        self.on_emergency = on_emergency or (lambda fields, ts: None)
        self.state: VehicleState = self.trip.state
        self.gps_pty = NmeaPty()
        self.elm = None
        if obd:
            from smartcity.sim.elm327 import Elm327Emulator
            self.elm = Elm327Emulator(self._obd_values, vin=vin)
        self.obd_path: str | None = None
        # The sensor's own 2 s limit runs on simulated time, like everything else here.
        self.dht = SimulatedDhtDevice(self.weather, self.now_and_position, seed=seed,
                                      error_rate=dht_error_rate, monotonic=self.clock.elapsed_s)
        # Real serial lines flip bits and drop bytes; this lets a run exercise the driver's rejects.
        self.nmea_corruption_rate = nmea_corruption_rate
        self.min_tick_s = min_tick_s
        self._noise = random.Random(f"{seed}:nmea-noise")
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def gps_path(self) -> str:
        return self.gps_pty.path

    def now(self) -> datetime:
        return self.clock.now()

    def now_and_position(self):
        s = self.state
        return self.clock.now(), s.lat, s.lon

    def _obd_values(self) -> dict:
        s = self.state
        return {"speed_kmh": s.speed_kmh, "rpm": s.rpm, "coolant_c": s.coolant_c,
                "throttle_pct": s.throttle_pct, "engine_load_pct": s.engine_load_pct,
                "fuel_level_pct": s.fuel_level_pct, "battery_v": s.battery_v}

    def weather_extras(self) -> dict:
        """What the simulator knows beyond a DHT: rain, wind, air quality, condition."""
        s = self.state
        w = self.weather.at(self.clock.now(), s.lat, s.lon)
        return {k: w[k] for k in ("precipitation_mm", "wind_speed_kmh", "air_quality_index",
                                  "weather_condition")}

    def start(self) -> None:
        if self.elm:
            self.obd_path = self.elm.start()
        self._thread = threading.Thread(target=self._run, name="sim-world", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self.elm:
            self.elm.stop()
        self.gps_pty.close()

    def _corrupt(self, data: bytes) -> bytes:
        if not self.nmea_corruption_rate or self._noise.random() >= self.nmea_corruption_rate:
            return data
        buf = bytearray(data)
        i = self._noise.randrange(len(buf))
        if self._noise.random() < 0.5:
            buf[i] ^= 1 << self._noise.randrange(7)   # a flipped bit: the checksum must catch it
        else:
            buf[i:i] = bytes(self._noise.randrange(256) for _ in range(8))  # line noise
        return bytes(buf)

    def _run(self) -> None:
        due: list[bytes] = []       # cycles whose time has come, not written yet
        last_wake = float("-inf")
        try:
            while not self._stop.is_set():
                state = self.trip.advance(self.dt_s)
                delay = self.clock.wall_delay_s(state.ts)
                if delay > 0:
                    # The next cycle lies ahead: hand over the due ones, then sleep until it is
                    # due, but at least until min_tick_s after the last wake-up.
                    self._write(due)
                    wait = max(delay, last_wake + self.min_tick_s - time.monotonic())
                    if self._stop.wait(wait):
                        break
                    last_wake = time.monotonic()
                else:
                    self.clock.sleep_until(state.ts, self._stop)   # speedup=inf: moves the clock
                self.state = state
                due.append(self._corrupt(nmea_cycle(
                    utc=state.ts, lat=state.lat, lon=state.lon, alt_m=state.alt_m,
                    speed_kmh=state.speed_kmh, heading_deg=state.heading_deg,
                    sats_used=state.sats_used, hdop=state.hdop, fix=True)))
                for obs in self.cameras.observe(state):
                    self.on_traffic(obs, state.ts)
                for upd in self.incidents.updates(state):
                    self.on_emergency(upd, state.ts)
                if self.clock.unpaced or len(due) >= MAX_DUE_CYCLES:
                    self._write(due)   # no pacing (speedup=inf), or running behind
                if state.finished:
                    self._write(due)
                    log.info("trip finished", extra={"odometer_m": state.odometer_m})
                    self.finished.set()
                    return
        except Exception:  # the world thread dying must be loud; the agent's health shows it
            log.exception("simulation thread failed")
            self.finished.set()
            raise

    def _write(self, due: list[bytes]) -> None:
        if due:
            self.gps_pty.write(b"".join(due))
            due.clear()
