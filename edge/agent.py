"""smartcity-edge: the vehicle's edge agent.

Sensor threads (GPS, OBD-II, DHT; in --simulate also cameras and incidents) turn readings into
contract records and append them to the durable queue; one publisher thread drains the queue to
MQTT and deletes a record only when the broker has acknowledged it. /healthz and /metrics sit on
localhost.
"""
from __future__ import annotations

import logging
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from smartcity.contracts.schema import ENVELOPE
from smartcity.runtime import obs
from smartcity.runtime.cli import ArgumentParser, cli
from smartcity.edge.crash import CrashDetector
from smartcity.edge.publisher import MqttPublisher, MqttSettings
from smartcity.edge.queue import DurableQueue
from smartcity.edge.recorder import Recorder
from smartcity.runtime.sdnotify import Notifier
from smartcity.runtime.settings import SettingsError
from smartcity.runtime.settings import load as load_settings
from smartcity.edge.timesource import TimeSource

log = logging.getLogger("smartcity.edge")


def _default_device_id() -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname()) or "edge"


@dataclass
class GpsSettings:
    enabled: bool = True
    port: str = "/dev/ttyACM0"
    baud: int = 9600


@dataclass
class ObdSettings:
    enabled: bool = True
    port: str = "/dev/ttyUSB0"
    baud: int = 38400
    interval_s: float = 1.0


@dataclass
class DhtSettings:
    enabled: bool = True
    model: str = "dht22"
    pin: str = "D4"
    interval_s: float = 10.0


@dataclass
class VehicleSettings:
    """Static facts about the vehicle; the VIN is read over OBD when the car answers mode 09."""
    make: str | None = None
    model: str | None = None
    year: int | None = None
    fuel_type: str | None = None
    vin: str | None = None


@dataclass
class SimSettings:
    seed: int = 7
    speedup: float = 1.0
    gps_rate_hz: float = 1.0
    dht_error_rate: float = 0.05
    nmea_corruption_rate: float = 0.0
    exit_at_trip_end: bool = True


@dataclass
class QueueSettings:
    max_bytes: int = 512 * 1024 * 1024      # waiting + rejected readings (payload bytes)
    max_age_s: float = 7 * 24 * 3600.0
    # Below this much free space on the queue's filesystem the queue stops growing: old
    # non-emergency readings make room, then other readings are refused (edge/queue.py). 0 = off.
    min_free_bytes: int = 128 * 1024 * 1024
    disk_check_s: float = 5.0               # statvfs at most this often


@dataclass
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 9108  # 0 disables /healthz and /metrics


@dataclass
class AgentSettings:
    device_id: str = field(default_factory=_default_device_id)
    data_dir: Path = Path("run/edge")
    simulate: bool = False
    log_level: str = "WARNING"
    duration_s: float = 0.0  # 0 = run until stopped (or the simulated trip ends)
    drain_timeout_s: float = 10.0
    # mqtt.username must equal device_id unless this is set (check_settings says why).
    allow_mqtt_username_mismatch: bool = False
    gps: GpsSettings = field(default_factory=GpsSettings)
    obd: ObdSettings = field(default_factory=ObdSettings)
    dht: DhtSettings = field(default_factory=DhtSettings)
    vehicle: VehicleSettings = field(default_factory=VehicleSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    http: HttpSettings = field(default_factory=HttpSettings)


class RateMeter:
    """Per-second rate of a growing total over a sliding window, for a dashboard without PromQL."""

    def __init__(self, total, window_s: float = 10.0, monotonic=time.monotonic):
        self._total, self._window_s, self._monotonic = total, window_s, monotonic
        self._samples: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            now, total = self._monotonic(), self._total()
            self._samples.append((now, total))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self._window_s:
                self._samples.pop(0)
            t0, v0 = self._samples[0]
            return 0.0 if now <= t0 else (total - v0) / (now - t0)


def nan_if_none(v: float | None) -> float:
    return float("nan") if v is None else v


SIM_VEHICLE = VehicleSettings(make="Toyota", model="Hilux Revo", year=2022, fuel_type="diesel")


class Agent:
    def __init__(self, settings: AgentSettings, notifier: Notifier | None = None):
        self.s = settings
        # systemd (Type=notify, WatchdogSec=): READY, WATCHDOG, STOPPING. No-op without systemd.
        self.notifier = notifier if notifier is not None else Notifier(env={})
        self._watchdog_sent = float("-inf")
        self._watchdog_withheld: tuple[str, ...] = ()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.stop_event = threading.Event()
        self.queue = DurableQueue(settings.data_dir / "queue.sqlite3",
                                  max_bytes=settings.queue.max_bytes,
                                  max_age_s=settings.queue.max_age_s,
                                  min_free_bytes=settings.queue.min_free_bytes,
                                  disk_check_s=settings.queue.disk_check_s)
        self.time = TimeSource()
        self.world = None
        if settings.simulate:
            from smartcity.sim.backend import SimWorld
            self.world = SimWorld(seed=settings.sim.seed, speedup=settings.sim.speedup,
                                  gps_rate_hz=settings.sim.gps_rate_hz,
                                  dht_error_rate=settings.sim.dht_error_rate,
                                  obd=settings.obd.enabled,
                                  nmea_corruption_rate=settings.sim.nmea_corruption_rate,
                                  on_traffic=self._on_traffic, on_emergency=self._on_emergency)
            now = lambda: (self.world.now(), "sim")  # noqa: E731
            source = "sim"
            for k, v in vars(SIM_VEHICLE).items():
                if getattr(settings.vehicle, k) is None:
                    setattr(settings.vehicle, k, v)
        else:
            now, source = self.time.now, "hw"
        self.recorder = Recorder(self.queue, settings.device_id, source, now)
        self.metrics = CollectorRegistry()
        self.publisher = MqttPublisher(self.queue, settings.mqtt, self.metrics)
        self.crash = CrashDetector()
        self.last_position: tuple[float | None, float | None] = (None, None)
        self.vin: str | None = settings.vehicle.vin
        self.threads: list[threading.Thread] = []
        self.gps_reader = self.obd_reader = self.dht_reader = None
        self._register_metrics()

    # --- readings -> records -------------------------------------------------------------
    def _on_fix(self, fix) -> None:
        clock = "sim" if self.world else "gps"
        ts = fix.ts
        if ts is not None and not self.world:
            self.time.on_gps_time(ts)
        if ts is None:
            ts, clock = self.recorder.now()
        fields = fix.to_fields()
        if fields.get("lat") is not None:
            self.last_position = (fields["lat"], fields["lon"])
        self.recorder.emit("gps", fields, ts, clock)
        if fields.get("speed_kmh") is not None:
            event = self.crash.feed(ts, fields["speed_kmh"], fields.get("lat"), fields.get("lon"))
            if event:
                self.recorder.emit("emergency", event, ts, clock)

    def _on_obd(self, reading: dict[str, Any]) -> None:
        if reading.get("vin"):
            self.vin = reading["vin"]
        v = self.s.vehicle
        lat, lon = self.last_position
        fields = {"make": v.make, "model": v.model, "year": v.year, "fuel_type": v.fuel_type,
                  "vin": self.vin, "lat": lat, "lon": lon}
        for k in ("speed_kmh", "rpm", "coolant_c", "fuel_level_pct", "throttle_pct",
                  "engine_load_pct", "battery_v"):
            fields[k] = reading.get(k)
        self.recorder.emit("vehicle", fields)

    def _on_weather(self, temperature_c: float | None, humidity_pct: float | None) -> None:
        lat, lon = self.last_position
        fields = {"temperature_c": temperature_c, "humidity_pct": humidity_pct,
                  "precipitation_mm": None, "wind_speed_kmh": None, "air_quality_index": None,
                  "weather_condition": None, "lat": lat, "lon": lon}
        if self.world:
            fields.update(self.world.weather_extras())
        self.recorder.emit("weather", fields)

    def _on_traffic(self, fields: dict, ts: datetime) -> None:
        self.recorder.emit("traffic", fields, ts, "sim")

    def _on_emergency(self, fields: dict, ts: datetime) -> None:
        self.recorder.emit("emergency", fields, ts, "sim")

    # --- threads -------------------------------------------------------------------------
    def _spawn(self, name: str, target) -> None:
        def guarded():
            try:
                target()
            except Exception:
                log.exception("thread crashed", extra={"thread_name": name})
        t = threading.Thread(target=guarded, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _dht_loop(self) -> None:
        interval = self.s.dht.interval_s
        if self.world:
            interval /= self.s.sim.speedup
        while not self.stop_event.is_set():
            reading = self.dht_reader.read()
            if reading is not None:
                self._on_weather(reading.temperature_c, reading.humidity_pct)
            self.stop_event.wait(max(interval, 0.01))

    def start(self) -> None:
        # First: a taken --http-port is a one-line error before any thread or simulated trip runs.
        if self.s.http.port:
            self.http = obs.serve_http(self.s.http.host, self.s.http.port, self.metrics,
                                       self.health)
        gps_port, obd_port = self.s.gps.port, self.s.obd.port
        obd_interval = self.s.obd.interval_s
        if self.world:
            self.world.start()
            gps_port, obd_port = self.world.gps_path, self.world.obd_path
            obd_interval /= self.s.sim.speedup
        self.publisher.start()
        if self.s.gps.enabled:
            from smartcity.edge.gps.reader import GpsReader
            # One queue transaction per read: the fixes of a read (and an emergency the crash
            # detector raises on one of them) are committed together.
            self.gps_reader = GpsReader(gps_port, self.s.gps.baud, on_fix=self._on_fix,
                                        batch=self.recorder.batch)
            self._spawn("gps", lambda: self.gps_reader.run(self.stop_event))
        if self.s.obd.enabled:
            from smartcity.edge.obd.reader import ObdReader
            self.obd_reader = ObdReader(obd_port, self.s.obd.baud)
            self._spawn("obd", lambda: self.obd_reader.run(self.stop_event, self._on_obd,
                                                          obd_interval))
        if self.s.dht.enabled:
            from smartcity.edge.dht import DhtReader, hardware_device
            if self.world:  # rate limits and retry waits run on simulated time
                speedup = self.s.sim.speedup
                self.dht_reader = DhtReader(lambda: self.world.dht, model="dht22",
                                            clock=self.world.clock.elapsed_s,
                                            sleep=lambda s: self.stop_event.wait(s / speedup))
            else:
                self.dht_reader = DhtReader(
                    lambda: hardware_device(self.s.dht.model, self.s.dht.pin),
                    model=self.s.dht.model, sleep=self.stop_event.wait)
            self._spawn("dht", self._dht_loop)

    def dead_threads(self) -> list[str]:
        """Names of the agent's threads that have stopped (sensor threads or the publisher)."""
        dead = [t.name for t in self.threads if not t.is_alive()]
        if not self.publisher.alive:
            dead.append("mqtt-publisher")
        return dead

    def watchdog_tick(self, now: float | None = None) -> bool:
        """Ping systemd's watchdog (WATCHDOG=1) when half its interval has passed, but only while
        every thread runs: a crashed sensor or publisher thread, or a hung main loop, lets
        WatchdogSec= expire and systemd restarts the agent (the queue is on disk: lossless).
        Returns True when a ping was sent."""
        interval = self.notifier.watchdog_s
        if interval is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._watchdog_sent < interval / 2:
            return False
        dead = tuple(self.dead_threads())
        if dead:
            if dead != self._watchdog_withheld:
                log.error("threads stopped; withholding the systemd watchdog so the agent is "
                          "restarted", extra={"dead_threads": list(dead)})
                self.notifier.status(f"threads stopped: {', '.join(dead)}; restart pending")
                self._watchdog_withheld = dead
            return False
        self._watchdog_sent = now
        return self.notifier.watchdog()

    def health(self) -> tuple[bool, dict]:
        dead = self.dead_threads()
        oldest = self.queue.oldest_age_s()
        ok = not dead and (self.publisher.connected or oldest < 60)
        return ok, {"dead_threads": dead, "mqtt_connected": self.publisher.connected,
                    "queue_dropped_total": self.queue.dropped_total(),
                    "queue_refused_total": self.queue.refused_total(),
                    "disk_low": self.queue.disk_low,
                    "queue_depth": self.queue.depth(), "oldest_queued_age_s": round(oldest, 3),
                    "last_fix_age_s": self._last_fix_age()}

    def _last_fix_age(self) -> float | None:
        """Seconds since the last fix with a position (no-fix reports do not count)."""
        last = self.gps_reader.last_fix_monotonic if self.gps_reader else None
        return None if last is None else round(time.monotonic() - last, 3)

    def _register_metrics(self) -> None:
        m = self.metrics
        obs.gauge_fn(m, "smartcity_edge_queue_depth", "Readings waiting in the durable queue",
                     self.queue.depth)
        obs.gauge_fn(m, "smartcity_edge_queue_oldest_age_seconds", "Age of the oldest queued reading",
                     self.queue.oldest_age_s)
        obs.counter_fn(m, "smartcity_edge_queue_dropped_total",
                       "Readings dropped by the size/age bound or the disk policy",
                       self.queue.dropped_total)
        obs.gauge_fn(m, "smartcity_edge_queue_rejected", "Readings the broker refused, kept aside",
                     self.queue.rejected_total)
        obs.counter_fn(m, "smartcity_edge_queue_rejected_dropped_total",
                       "Rejected readings dropped by the size/age bound or the disk policy",
                       self.queue.rejected_dropped_total)
        obs.counter_fn(m, "smartcity_edge_queue_refused_total",
                       "Readings refused for lack of disk space since the agent started, by reason",
                       lambda: {(k,): v for k, v in self.queue.refused_total().items()}, ["reason"])
        obs.gauge_fn(m, "smartcity_edge_disk_free_bytes", "Free bytes of the queue's filesystem",
                     lambda: nan_if_none(self.queue.disk_free_bytes()))
        obs.gauge_fn(m, "smartcity_edge_disk_low", "1 while free space is below queue.min_free_bytes",
                     lambda: int(self.queue.disk_low))
        obs.gauge_fn(m, "smartcity_edge_published_per_second",
                     "Readings acknowledged by the broker per second, over the last ~10 s",
                     RateMeter(lambda: obs.value(self.publisher.m_acks)))
        obs.gauge_fn(m, "smartcity_edge_last_fix_age_seconds", "Seconds since the last GPS fix",
                     lambda: nan_if_none(self._last_fix_age()))
        obs.counter_fn(m, "smartcity_edge_records_total", "Records queued, by stream",
                       lambda: {(k,): v for k, v in self.recorder.records_total.items()}, ["stream"])
        obs.counter_fn(m, "smartcity_edge_records_invalid_total", "Readings rejected by the contract",
                       lambda: {(k,): v for k, v in self.recorder.invalid_total.items()}, ["stream"])
        obs.counter_fn(m, "smartcity_edge_sensor_errors_total", "Sensor errors, by sensor and kind",
                       self._sensor_errors, ["sensor", "kind"])

    # The error-like counters of each driver's stats (the rest are throughput, not errors).
    SENSOR_ERROR_KINDS = {
        "gps": ("checksum_errors", "garbage_lines", "unknown_sentences", "field_errors",
                "reopen_count", "callback_errors"),
        "dht": ("read_errors", "implausible", "failed", "reinits"),
        "obd": ("no_data", "timeouts", "reconnects", "errors_by_kind", "callback_errors"),
    }

    def _sensor_errors(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for name, reader in (("gps", self.gps_reader), ("obd", self.obd_reader),
                             ("dht", self.dht_reader)):
            if reader is None:
                continue
            stats = reader.stats.as_dict()
            for kind in self.SENSOR_ERROR_KINDS[name]:
                value = stats.get(kind)
                if isinstance(value, dict):  # e.g. OBD errors by kind
                    for sub, n in value.items():
                        out[(name, f"{kind}:{sub}")] = n
                elif value is not None:
                    out[(name, kind)] = value
        return out

    def run(self) -> int:
        self.start()
        self.notifier.ready(f"recording as {self.s.device_id}")
        deadline = time.monotonic() + self.s.duration_s if self.s.duration_s else None
        while not self.stop_event.is_set():
            if deadline and time.monotonic() >= deadline:
                break
            if self.world and self.s.sim.exit_at_trip_end and self.world.finished.is_set():
                log.warning("simulated trip reached Pattaya")
                break
            self.watchdog_tick()
            self.stop_event.wait(0.2)
        self.notifier.stopping("draining the queue")
        self.shutdown()
        self.notifier.close()
        return 0

    def shutdown(self) -> None:
        self.stop_event.set()
        if self.world:
            self.world.stop()
        for t in self.threads:
            t.join(5)
        # Give the publisher a bounded chance to empty the queue; what is left stays on disk.
        deadline = time.monotonic() + self.s.drain_timeout_s
        while self.queue.depth() and self.publisher.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self.publisher.stop(timeout=5)
        left = self.queue.depth()
        if left:
            log.warning("stopping with readings still queued; they are sent on the next start",
                        extra={"queue_depth": left})
        self.queue.close()


def parse_args(argv: list[str] | None) -> tuple[str | None, dict[str, Any]]:
    p = ArgumentParser(prog="smartcity-edge", description=__doc__.splitlines()[0],
                       epilog="smartcity-edge queue {status,requeue-rejected} [--data-dir DIR]: the "
                              "durable queue, and readings the broker refused (queue --help)")
    p.add_argument("--config", help="TOML settings file (optional)")
    p.add_argument("--simulate", action="store_true", default=None,
                   help="no hardware: simulated Bangkok -> Pattaya trip at the wire")
    p.add_argument("--device-id")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--speedup", type=float, help="simulated seconds per wall second")
    p.add_argument("--seed", type=int)
    p.add_argument("--gps-rate-hz", type=float)
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--mqtt-delivery", choices=("end_to_end", "broker"),
                   help="delete a reading when the bridge says Kafka has it (end_to_end, the "
                        "default) or on the broker's PUBACK (broker: no acknowledging bridge)")
    p.add_argument("--http-port", type=int, help="0 disables /healthz and /metrics")
    p.add_argument("--duration-s", type=float, help="stop after this many wall seconds")
    p.add_argument("--log-level")
    a = p.parse_args(argv)
    over: dict[str, Any] = {}
    for key, path in (("simulate", "simulate"), ("device_id", "device_id"),
                      ("data_dir", "data_dir"), ("speedup", "sim.speedup"), ("seed", "sim.seed"),
                      ("gps_rate_hz", "sim.gps_rate_hz"), ("mqtt_host", "mqtt.host"),
                      ("mqtt_port", "mqtt.port"), ("mqtt_delivery", "mqtt.delivery"),
                      ("http_port", "http.port"),
                      ("duration_s", "duration_s"), ("log_level", "log_level")):
        value = getattr(a, key)
        if value is not None:
            over[path] = value
    return a.config, over


_DEVICE_ID = next(f for f in ENVELOPE if f.name == "device_id")


def check_settings(s: AgentSettings) -> list[str]:
    """Refuse (SettingsError) settings under which every reading would fail; return warnings.

    - device_id must be a valid contract device_id (whole value): every record carries it.
    - mqtt.username, when set, must equal device_id. The deployed broker ACL lets each user write
      only smartcity/v1/{its username}/# (Mosquitto `pattern write smartcity/v1/%u/#`), so with
      another username every reading is refused, set aside in the queue's rejected table and
      logged, for as long as the agent runs. A broker whose ACL keys on something else (the
      client id, Mosquitto `%c`; a fleet account on a hosted broker) is a legitimate deployment:
      allow_mqtt_username_mismatch = true starts anyway, with a warning at every start.
    """
    f = _DEVICE_ID
    if len(s.device_id) > f.max_length or not re.fullmatch(f.pattern, s.device_id):
        raise SettingsError(f"device_id {s.device_id!r} must match {f.pattern} (at most "
                            f"{f.max_length} characters): every reading carries it")
    user = s.mqtt.username
    if user is not None and user != s.device_id:
        why = (f"mqtt.username {user!r} differs from device_id {s.device_id!r}: a broker whose ACL "
               "lets each user write only smartcity/v1/{username}/# (as deployed) refuses every "
               "reading")
        if not s.allow_mqtt_username_mismatch:
            raise SettingsError(f"{why}. Use the device id as the MQTT username, or set "
                                "allow_mqtt_username_mismatch = true if the broker's ACL does not "
                                "key on the username")
        return [f"{why}; starting anyway because allow_mqtt_username_mismatch is set"]
    return []


@cli("smartcity-edge")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["queue"]:   # smartcity-edge queue status|requeue-rejected (edge/queue.py)
        from smartcity.edge.queue import main as queue_main
        return queue_main(argv[1:])
    config, overrides = parse_args(argv)
    settings = load_settings(AgentSettings, config, "SMARTCITY_EDGE_", overrides)
    # One device id for records and the MQTT session/status topic.
    settings.mqtt.device_id = settings.device_id
    warnings = check_settings(settings)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SettingsError(f"data_dir: cannot create {settings.data_dir}: {e.strerror}") from None
    obs.configure_logging(settings.log_level)
    for w in warnings:
        log.warning("starting despite a setting", extra={"reason": w})
    agent = Agent(settings, Notifier.from_environ())
    signal.signal(signal.SIGTERM, lambda *_: agent.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop_event.set())
    return agent.run()


if __name__ == "__main__":
    raise SystemExit(main())
