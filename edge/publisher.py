"""Store-and-forward publisher: DurableQueue -> MQTT v5 (QoS 1), rows deleted only on PUBACK.

How delivery stays lossless and ordered:
- The queue is the source of truth. Each connection publishes rows in rowid order, starting
  from the oldest row still in the queue, never skipping one, and a row leaves the queue only
  when its PUBACK reports success. A lost connection loses nothing: the next connection starts
  again from the oldest unacknowledged row.
- First arrivals stay in order: TCP delivers one connection's packets in order and the broker
  handles them in order, so if row k reached the broker on a connection, every earlier row sent
  on it did too. Rows that never arrived are resent on the next connection before anything newer.
  What can happen is duplicates (a row that arrived but whose PUBACK was lost is sent again);
  downstream drops them by event_id.
- A fresh paho client per connection: paho would otherwise resend its own copy of the messages
  that were in flight, on top of our replay from the queue, and PUBACKs of an old connection
  could be matched to message ids of the new one. The BROKER session is still persistent:
  clean_start=False on every connect (paho's default MQTT_CLEAN_START_FIRST_ONLY would start
  clean on the first one) and a session expiry interval.
- In-flight window well below 65,535 message ids (ids wrap), and below the broker's
  receive-maximum from CONNACK (MQTT v5 forbids exceeding it).

Rejected publishes: with MQTT v5 and QoS 1 a broker that refuses a message (e.g. Mosquitto when
the ACL denies the topic) still sends PUBACK, with a failure reason code (0x87 not authorized).
Such a row is NOT deleted: it is moved to the queue's `rejected` table (kept on disk, can be put
back with DurableQueue.requeue_rejected() once the ACL is fixed), counted in
publish_rejected_total{reason} and logged as an error with its topic and seq. Retrying it in
place would block every reading behind it forever; dropping it would be silent loss.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contracts.envelope import TOPIC_PREFIX

from .obs import Registry
from .queue import DurableQueue, Row

log = logging.getLogger(__name__)

MAX_WINDOW = 10_000  # far below the 65,535 MQTT packet ids


@dataclass
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    device_id: str = "edge-0001"
    client_id: str | None = None          # default: smartcity-edge-{device_id}
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86400     # broker keeps our session this long while we are away
    inflight_window: int = 500
    batch_rows: int = 500                 # rows read from the queue per peek
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    ack_flush_s: float = 0.05             # batch deletes of acknowledged rows (one commit each)
    idle_poll_s: float = 0.05             # how soon a new row is noticed when the queue was empty

    def __post_init__(self):
        if not 1 <= self.inflight_window <= MAX_WINDOW:
            raise ValueError(f"inflight_window must be 1..{MAX_WINDOW}, got {self.inflight_window}")
        if not self.device_id or any(c in self.device_id for c in "/+#"):
            raise ValueError(f"device_id {self.device_id!r} must be non-empty without / + #")

    @property
    def status_topic(self) -> str:
        return f"{TOPIC_PREFIX}/{self.device_id}/status"


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: the ceiling doubles per failed attempt (1, 2, ...) up to
    max_s, the delay is uniform in [ceiling/2, ceiling] so a fleet reconnecting after a broker
    restart spreads out instead of arriving in lockstep."""
    ceiling = min(max_s, min_s * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(ceiling / 2, ceiling)


class MqttPublisher:
    def __init__(self, queue: DurableQueue, settings: MqttSettings, metrics: Registry | None = None):
        self.queue = queue
        self.settings = settings
        self.metrics = metrics if metrics is not None else Registry()
        m = self.metrics
        self.m_published = m.counter("smartcity_mqtt_published_total",
                                     "Queued readings handed to MQTT (resends included)")
        self.m_acks = m.counter("smartcity_mqtt_publish_acks_total",
                                "Readings acknowledged by the broker and deleted from the queue")
        self.m_rejected = m.counter("smartcity_mqtt_publish_rejected_total",
                                    "Readings the broker refused (PUBACK failure), moved aside",
                                    ["reason"])
        self.m_reconnects = m.counter("smartcity_mqtt_reconnects_total",
                                      "Successful connections after the first")
        self.m_connect_failures = m.counter("smartcity_mqtt_connect_failures_total",
                                            "Connection attempts that failed or were refused")
        self.m_inflight = m.gauge("smartcity_mqtt_inflight", "Publishes awaiting PUBACK")
        self.m_connected = m.gauge("smartcity_mqtt_connected", "1 while connected to the broker")
        self._rng = random.Random()
        self._stop_evt = threading.Event()
        self._flush_deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connack: tuple[Any, Any] | None = None
        self._inflight: dict[int, Row] = {}
        self._acked: list[int] = []
        self._connections = 0
        self.last_error: str | None = None

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> "MqttPublisher":
        if self._thread and self._thread.is_alive():
            return self
        self._stop_evt.clear()
        self._flush_deadline = None
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Keep publishing until the queue is empty or `timeout` passes, then say offline and
        disconnect. Unpublished rows stay in the queue for the next start."""
        self._flush_deadline = time.monotonic() + timeout
        self._stop_evt.set()
        if self._thread:
            self._thread.join(timeout + self.settings.connect_timeout_s + 2)
            if self._thread.is_alive():
                log.error("mqtt publisher thread did not stop in time")

    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> dict:
        return {"connected": self._connected, "inflight": len(self._inflight),
                "queue_depth": self.queue.depth(), "last_error": self.last_error,
                "broker": f"{self.settings.host}:{self.settings.port}"}

    # thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop_evt.is_set():
            try:
                if self._connect():
                    attempt = 0
                    self._pump()
                    self._teardown(graceful=self._stop_evt.is_set())
                    continue
            except Exception as e:
                # A bug or a disk error must not kill delivery for good: log, drop the connection
                # (rows stay queued), back off, try again. Health shows connected=0 meanwhile.
                log.exception("mqtt publisher error; reconnecting")
                self.last_error = f"{type(e).__name__}: {e}"
                try:
                    self._teardown(graceful=False)
                except Exception:
                    log.exception("mqtt publisher teardown failed")
                    self._client, self._connected = None, False
            attempt += 1
            delay = backoff_delay(attempt, self.settings.reconnect_min_s,
                                  self.settings.reconnect_max_s, self._rng)
            log.info("mqtt reconnect scheduled", extra={"delay_s": round(delay, 2), "attempt": attempt})
            self._stop_evt.wait(delay)

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id or f"smartcity-edge-{s.device_id}",
                        protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(0)  # we enforce the window; paho must never queue internally
        c.max_queued_messages_set(0)
        if s.username is not None:
            c.username_pw_set(s.username, s.password)
        if s.tls:
            c.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None,
                      certfile=str(s.cert_file) if s.cert_file else None,
                      keyfile=str(s.key_file) if s.key_file else None)
        c.will_set(s.status_topic, b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def _connect(self) -> bool:
        s = self.settings
        self._connack = None
        self._inflight = {}
        client = self._new_client()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        try:
            client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=False,
                           properties=props)
            deadline = time.monotonic() + s.connect_timeout_s
            while self._connack is None and time.monotonic() < deadline \
                    and not self._stop_evt.is_set():
                if client.loop(0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        except Exception as e:  # OSError, ssl errors, DNS: all mean "try again later"
            self._connect_failed(f"{type(e).__name__}: {e}")
            self._close_socket(client)
            return False
        if self._connack is None:
            self._connect_failed("no CONNACK" if not self._stop_evt.is_set() else "stopping")
            self._close_socket(client)
            return False
        reason, props_in = self._connack
        if reason.is_failure:
            self._connect_failed(f"refused: {reason}")
            self._close_socket(client)
            return False
        self._client = client
        self._connected = True
        self._connections += 1
        if self._connections > 1:
            self.m_reconnects.inc()
        self.m_connected.set(1)
        window = s.inflight_window
        recv_max = getattr(props_in, "ReceiveMaximum", None)
        if recv_max:
            window = max(1, min(window, recv_max - 1))  # one slot for the status message
        self._window = window
        self.last_error = None
        log.info("mqtt connected", extra={"broker": f"{s.host}:{s.port}", "window": window,
                                          "receive_maximum": recv_max,
                                          "connections": self._connections})
        client.publish(s.status_topic, b"online", qos=1, retain=True)
        return True

    def _connect_failed(self, why: str) -> None:
        self.last_error = why
        self.m_connect_failures.inc()
        log.warning("mqtt connect failed", extra={"broker": f"{self.settings.host}:{self.settings.port}",
                                                  "error": why})

    @staticmethod
    def _close_socket(client: mqtt.Client) -> None:
        try:
            client.disconnect()
        except Exception:
            pass
        try:
            client.loop(0)  # lets paho close the socket
        except Exception:
            pass

    def _pump(self) -> None:
        """Publish and process acks until the connection drops or stop() has flushed."""
        client = self._client
        s = self.settings
        cursor: int | None = None   # last rowid sent on THIS connection
        last_flush = time.monotonic()
        while self._connected:
            stopping = self._stop_evt.is_set()
            if stopping and (time.monotonic() >= self._flush_deadline or (
                    not self._inflight and not self.queue.peek(1, after_rowid=cursor))):
                break
            sent = 0
            room = self._window - len(self._inflight)
            if room > 0:
                for row in self.queue.peek(min(room, s.batch_rows), after_rowid=cursor):
                    info = client.publish(row.topic, row.payload, qos=1)
                    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        # NO_CONN: the connection just dropped; this row will be resent later.
                        self._connected = False
                        break
                    self._inflight[info.mid] = row
                    cursor = row.rowid
                    sent += 1
                if sent:
                    self.m_published.inc(sent)
                    self.m_inflight.set(len(self._inflight))
            # Block in select only when there was nothing to send: PUBACKs wake it immediately.
            rc = client.loop(0 if sent else s.idle_poll_s)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._connected = False
            now = time.monotonic()
            if self._acked and (now - last_flush >= s.ack_flush_s or len(self._acked) >= self._window):
                self._flush_acks()
                last_flush = now
        self._flush_acks()

    def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self.queue.ack(acked)
            self.m_acks.inc(len(acked))

    def _teardown(self, graceful: bool) -> None:
        client, self._client = self._client, None
        self._connected = False
        self.m_connected.set(0)
        self._flush_acks()
        self._inflight = {}
        self.m_inflight.set(0)
        if client is None:
            return
        if graceful:
            # The will is only sent on an unclean disconnect: say offline ourselves.
            try:
                info = client.publish(self.settings.status_topic, b"offline", qos=1, retain=True)
                deadline = time.monotonic() + 1.0
                while not info.is_published() and time.monotonic() < deadline:
                    if client.loop(0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
            except Exception:
                pass
        self._close_socket(client)

    # paho callbacks (run inside client.loop() on our thread) ---------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = (reason_code, properties)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected:
            log.warning("mqtt disconnected", extra={"reason": str(reason_code),
                                                    "inflight": len(self._inflight)})
            self.last_error = f"disconnected: {reason_code}"
        self._connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        row = self._inflight.pop(mid, None)
        if row is None:
            return  # the status message
        if reason_code.is_failure:
            # "No matching subscribers" (0x10) is success; anything >= 0x80 is a refusal.
            self.m_rejected.inc(reason=str(reason_code))
            log.error("broker rejected reading; moved to the rejected table",
                      extra={"topic": row.topic, "seq": row.seq, "stream": row.stream,
                             "reason": str(reason_code), "reason_code": reason_code.value})
            self.queue.reject(row.rowid, str(reason_code))
        else:
            self._acked.append(row.rowid)


def drain_benchmark(n: int = 100_000, payload_bytes: int = 300, window: int = 500,
                    workdir: str | Path | None = None, fsync: bool = False,
                    timeout_s: float = 300.0) -> dict:
    """Fill a queue with n readings (~payload_bytes JSON each), start a local Mosquitto, publish
    until every row is acknowledged. Returns the rate. Used by `python -m bench edge`."""
    import json
    import shutil
    import tempfile

    from deploy.local.mosquitto import MosquittoServer

    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="smartcity-drain-"))
    tmp.mkdir(parents=True, exist_ok=True)
    broker = MosquittoServer(tmp / "mqtt", persistence=False).start()
    q = DurableQueue(tmp / "queue.db", max_bytes=10 * n * payload_bytes, fsync=fsync)
    try:
        device = "bench-0001"
        filler = "x" * max(0, payload_bytes - 120)

        def build(stream):
            def b(seq):
                doc = {"event_id": f"{device}:boot:{seq}", "device_id": device, "seq": seq,
                       "ts": "2026-01-01T00:00:00.000Z", "stream": stream, "pad": filler}
                return f"{TOPIC_PREFIX}/{device}/{stream}", json.dumps(doc).encode()
            return b

        t0 = time.monotonic()
        streams = ["gps", "vehicle", "weather"]
        for start in range(0, n, 5000):
            q.append_many([(streams[i % 3], build(streams[i % 3]))
                           for i in range(start, min(n, start + 5000))])
        fill_s = time.monotonic() - t0
        avg_payload = q.bytes() / max(1, q.depth())
        pub = MqttPublisher(q, MqttSettings(port=broker.port, device_id=device,
                                            inflight_window=window))
        t0 = time.monotonic()
        pub.start()
        deadline = t0 + timeout_s
        while q.depth() and time.monotonic() < deadline:
            time.sleep(0.02)
        drain_s = time.monotonic() - t0
        left = q.depth()
        pub.stop(2)
        return {"readings": n, "payload_bytes_avg": round(avg_payload, 1), "window": window,
                "fsync": fsync, "fill_s": round(fill_s, 3), "drain_s": round(drain_s, 3),
                "readings_per_s": round((n - left) / drain_s, 1), "left_in_queue": left,
                "published_total": pub.m_published.get(), "acks_total": pub.m_acks.get()}
    finally:
        q.close()
        broker.stop()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
