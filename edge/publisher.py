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
Such a row is NOT deleted: it is moved to the queue's `rejected` table (kept on disk, put back
with `smartcity-edge queue requeue-rejected` once the ACL is fixed), counted in
publish_rejected_total{reason} and logged as an error with its topic and seq (one line a minute
per reason code, with the count of repeats held back). Retrying it in place would block every
reading behind it forever; dropping it would be silent loss. The rejected table counts towards
the queue's max_bytes and is evicted first (edge/queue.py).

End-to-end acknowledgement (delivery="end_to_end", the default): a PUBACK only says the broker took
the message, and a broker can still drop it (reason 0x10 "no matching subscribers" while the
bridge's shared subscription is missing after a broker restart), lose it (kill -9 between its
autosaves) or hold it for an offline bridge that never returns. So a row leaves the queue only when
the bridge reports that Kafka has confirmed it, on the device's ack topic (`contracts.acks`). Until
then the row is "unconfirmed"; the publisher goes back to the oldest row still queued and sends
everything again (same event_id) when the oldest unconfirmed row has waited `ack_timeout_s`
(doubling while nothing is confirmed, up to `ack_timeout_max_s`, so a long bridge outage does not
flood the broker), soon after a PUBACK 0x10, and after every reconnect. Acks that arrive for rows
not sent on this connection (queued by the broker while we were away) are remembered and spare the
resend. delivery="broker" keeps PUBACK semantics for brokers without a bridge that acknowledges
(a plain MQTT broker, AWS IoT Core rules); 0x10 is then "not delivered" and retried too.

Waking up: the publisher runs paho's network loop itself (`socket()`, `loop_read()`,
`loop_write()`, `loop_misc()`: paho's external-loop API) and selects on the MQTT socket and a
wake-up pipe. The queue calls back after every commit that added readings (add_listener); the
callback writes one byte to the pipe only while the publisher sleeps in select. So a new reading
is sent at once, the queue is read only when something was added (or a window slot freed), and
an idle publisher sleeps until a packet, a new reading or a deadline (ack flush, resend, keepalive;
at most `idle_poll_s`, which also bounds how late rows another process puts in the file, such as
`smartcity-edge queue requeue-rejected`, are noticed). paho's own `loop()` is not used: it would
make every publish() also write a byte to paho's internal socket pair to wake itself.
"""
from __future__ import annotations

import logging
import os
import random
import select
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry, Counter, Gauge

from smartcity.contracts.acks import ack_topic, decode_acks, find_event_id
from smartcity.contracts.envelope import TOPIC_PREFIX

from smartcity.runtime.mqtt import MqttConnection, apply_auth_tls
from .queue import DurableQueue, Row
from smartcity.runtime.ratelimit import LogLimiter

log = logging.getLogger(__name__)

MAX_WINDOW = 10_000  # far below the 65,535 MQTT packet ids
DELIVERY_MODES = ("end_to_end", "broker")
NO_MATCHING_SUBSCRIBERS = 0x10
EARLY_ACKS_MAX = 200_000   # acks remembered for rows not (re)sent yet on this connection


@dataclass
class MqttSettings(MqttConnection):
    """The shared connection settings (host, port, credentials, TLS, keepalive, session expiry,
    reconnect backoff: runtime.mqtt) and the publisher's own. client_id defaults to
    smartcity-edge-{device_id}."""
    device_id: str = "edge-0001"
    inflight_window: int = 500
    batch_rows: int = 500                 # rows read from the queue per peek
    connect_timeout_s: float = 10.0
    ack_flush_s: float = 0.05             # batch deletes of acknowledged rows (one commit each)
    # An idle publisher wakes on a new reading of this process at once, and looks at the queue at
    # least this often (rows another process adds, e.g. `queue requeue-rejected`).
    idle_poll_s: float = 0.5
    # "end_to_end": delete a row when the bridge says Kafka has it; "broker": on PUBACK.
    delivery: str = "end_to_end"
    ack_timeout_s: float = 30.0           # resend what stays unconfirmed this long...
    ack_timeout_max_s: float = 600.0      # ...doubling up to this while nothing is confirmed
    max_unconfirmed: int = 5000           # sent and not yet confirmed end to end; then wait

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.inflight_window <= MAX_WINDOW:
            raise ValueError(f"inflight_window must be 1..{MAX_WINDOW}, got {self.inflight_window}")
        if self.delivery not in DELIVERY_MODES:
            raise ValueError(f"delivery must be one of {DELIVERY_MODES}, got {self.delivery!r}")
        if not 0 < self.ack_timeout_s <= self.ack_timeout_max_s:
            raise ValueError("need 0 < ack_timeout_s <= ack_timeout_max_s")
        if self.max_unconfirmed < self.inflight_window:
            raise ValueError("max_unconfirmed must be >= inflight_window")
        if not self.device_id or any(c in self.device_id for c in "/+#"):
            raise ValueError(f"device_id {self.device_id!r} must be non-empty without / + #")

    @property
    def status_topic(self) -> str:
        return f"{TOPIC_PREFIX}/{self.device_id}/status"

    @property
    def ack_topic(self) -> str:
        return ack_topic(self.device_id)

    @property
    def end_to_end(self) -> bool:
        return self.delivery == "end_to_end"


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: the ceiling doubles per failed attempt (1, 2, ...) up to
    max_s, the delay is uniform in [ceiling/2, ceiling] so a fleet reconnecting after a broker
    restart spreads out instead of arriving in lockstep."""
    ceiling = min(max_s, min_s * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(ceiling / 2, ceiling)


class MqttPublisher:
    def __init__(self, queue: DurableQueue, settings: MqttSettings,
                 metrics: CollectorRegistry | None = None):
        self.queue = queue
        self.settings = settings
        self.metrics = m = metrics if metrics is not None else CollectorRegistry()
        self.m_published = Counter("smartcity_mqtt_published_total",
                                   "Queued readings handed to MQTT (resends included)", registry=m)
        self.m_acks = Counter("smartcity_mqtt_publish_acks_total",
                              "Readings confirmed and deleted from the queue (end to end: in "
                              "Kafka, as the bridge reports; delivery=broker: on PUBACK)", registry=m)
        self.m_rejected = Counter("smartcity_mqtt_publish_rejected_total",
                                  "Readings the broker refused (PUBACK failure), moved aside",
                                  ["reason"], registry=m)
        self.m_reconnects = Counter("smartcity_mqtt_reconnects_total",
                                    "Successful connections after the first", registry=m)
        self.m_connect_failures = Counter("smartcity_mqtt_connect_failures_total",
                                          "Connection attempts that failed or were refused", registry=m)
        self.m_not_delivered = Counter("smartcity_mqtt_not_delivered_total",
                                       "PUBACKs with 0x10 'no matching subscribers': the broker "
                                       "dropped the reading; it is sent again", registry=m)
        self.m_resends = Counter("smartcity_mqtt_resends_total",
                                 "Times the publisher went back to the oldest unconfirmed reading",
                                 ["reason"], registry=m)
        self.m_bad_acks = Counter("smartcity_mqtt_bad_acks_total",
                                  "Messages on the ack topic that were not valid acknowledgements",
                                  registry=m)
        self.m_inflight = Gauge("smartcity_mqtt_inflight", "Publishes awaiting PUBACK", registry=m)
        self.m_unconfirmed = Gauge("smartcity_mqtt_unconfirmed",
                                   "Readings sent and not yet confirmed end to end", registry=m)
        self.m_connected = Gauge("smartcity_mqtt_connected", "1 while connected to the broker",
                                 registry=m)
        self._rng = random.Random()
        self._stop_evt = threading.Event()
        self._flush_deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connack: tuple[Any, Any] | None = None
        # packet id -> (row, its (boot_id, seq) end-to-end key or None: confirmed on PUBACK)
        self._inflight: dict[int, tuple[Row, tuple[str, int] | None]] = {}
        # end to end: (boot_id, seq) -> (rowid, monotonic time sent); insertion order = send order
        self._unconfirmed: dict[tuple[str, int], tuple[int, float]] = {}
        self._early_acks: set[tuple[str, int]] = set()
        self._rewind_at: float | None = None    # when to go back to the oldest queued row
        self._timeout_s = settings.ack_timeout_s
        self._nosub_retry_s = settings.reconnect_min_s
        self._acked: list[int] = []
        self._connections = 0
        # Wake-up (module docstring): set by the queue's listener, read by the publishing thread.
        self._dirty = True          # rows may have been added since the queue was last read
        self._sleeping = False      # in select: a new row must write to the wake-up pipe
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._wake_lock = threading.Lock()   # _wake() against stop() closing the pipe
        self.last_error: str | None = None
        self._reject_log = LogLimiter(log, every_s=60.0)  # a refusing ACL refuses every reading

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> "MqttPublisher":
        if self._thread and self._thread.is_alive():
            return self
        self._stop_evt.clear()
        self._flush_deadline = None
        if self._wake_r is None:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
        self._dirty = True
        self.queue.add_listener(self._on_queued)
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Keep publishing until the queue is empty or `timeout` passes, then say offline and
        disconnect. Unpublished rows stay in the queue for the next start."""
        self._flush_deadline = time.monotonic() + timeout
        self._stop_evt.set()
        self._wake()
        if self._thread:
            self._thread.join(timeout + self.settings.connect_timeout_s + 2)
            if self._thread.is_alive():
                log.error("mqtt publisher thread did not stop in time")
                return
        self.queue.remove_listener(self._on_queued)
        with self._wake_lock:   # an appender may be in _wake(): never write to a reused fd
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), None, None
            for fd in fds:
                if fd is not None:
                    os.close(fd)

    # wake-up ---------------------------------------------------------------------------------
    def _on_queued(self) -> None:
        """The queue's listener (in the appending thread, after the commit)."""
        self._dirty = True
        if self._sleeping:
            self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_w is not None:
                try:
                    os.write(self._wake_w, b"\0")
                except BlockingIOError:
                    pass   # full: a wake-up is pending anyway

    def _io(self, client: mqtt.Client, timeout: float, rows_wanted: bool = False) -> MQTTErrorCode:
        """One turn of paho's network loop, run here: wait up to `timeout` for the socket, the
        wake-up pipe or room to write, then read, write and keep alive. rows_wanted: there is
        room to send, so a new reading ends the wait."""
        sock = client.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if getattr(sock, "pending", lambda: 0)():
            timeout = 0.0   # TLS holds decrypted bytes that select cannot see
        wake = self._wake_r
        rlist = [sock] if wake is None else [sock, wake]
        wlist = [sock] if client.want_write() else []
        # The listener sets _dirty, then looks at _sleeping; we set _sleeping, then look at
        # _dirty: one of the two sees the other, so no new reading is slept through.
        self._sleeping = rows_wanted and timeout > 0
        try:
            if self._sleeping and self._dirty:
                timeout = 0.0
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except (OSError, ValueError, TypeError):
            return MQTTErrorCode.MQTT_ERR_CONN_LOST   # the socket was closed under us
        finally:
            self._sleeping = False
        if wake is not None and wake in readable:
            try:
                os.read(wake, 4096)
            except BlockingIOError:
                pass
        if sock in readable or getattr(sock, "pending", lambda: 0)():
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        if client.want_write():
            rc = client.loop_write()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        return client.loop_misc()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def alive(self) -> bool:
        """True while the publishing thread runs (it ends only on stop() or a bug)."""
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict:
        return {"connected": self._connected, "inflight": len(self._inflight),
                "unconfirmed": len(self._unconfirmed), "delivery": self.settings.delivery,
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
        apply_auth_tls(c, s)
        c.will_set(s.status_topic, b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_ack_message
        c.on_subscribe = self._on_subscribe
        return c

    def _connect(self) -> bool:
        s = self.settings
        self._connack = None
        self._inflight = {}
        # Everything still queued is sent again on the new connection; acks for it may still come.
        self._unconfirmed = {}
        self._rewind_at = None
        client = self._new_client()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        try:
            client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=False,
                           properties=props)
            deadline = time.monotonic() + s.connect_timeout_s
            while self._connack is None and time.monotonic() < deadline \
                    and not self._stop_evt.is_set():
                if self._io(client, 0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
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
        if s.end_to_end:
            # The persistent session keeps the subscription; subscribing again repairs a lost one.
            client.subscribe(s.ack_topic, qos=1)
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
        e2e = s.end_to_end
        cursor: int | None = None   # last rowid sent on THIS connection
        last_flush = time.monotonic()
        last_read = float("-inf")   # when the queue was last read
        self._dirty = True
        while self._connected:
            stopping = self._stop_evt.is_set()
            if stopping and (time.monotonic() >= self._flush_deadline or (
                    not self._inflight and not self._unconfirmed
                    and not self.queue.peek(1, after_rowid=cursor))):
                break
            now = time.monotonic()
            reason = self._rewind_reason(now)
            if reason:
                # Go back: every row still queued is unconfirmed (confirmed ones are deleted
                # first), so resending from the oldest resends exactly what is missing.
                self._flush_acks()
                cursor = None
                self._dirty = True
                self._rewind_at = None
                self.m_resends.labels(reason=reason).inc()
                log.info("resending unconfirmed readings", extra={
                    "reason": reason, "unconfirmed": len(self._unconfirmed),
                    "next_timeout_s": self._timeout_s})
            if now - last_read >= s.idle_poll_s:
                self._dirty = True   # rows another process added are noticed this late at most
            sent = 0
            room = self._window - len(self._inflight)
            if e2e:
                room = min(room, s.max_unconfirmed - len(self._unconfirmed))
            if room > 0 and self._dirty:
                limit = min(room, s.batch_rows)
                self._dirty = False   # before reading: a commit from now on sets it again
                rows = self.queue.peek(limit, after_rowid=cursor)
                last_read = now
                if len(rows) >= limit:
                    self._dirty = True   # more may wait behind these
                for row in rows:
                    key = self._row_key(row) if e2e else None
                    if key is not None and key in self._early_acks:
                        self._early_acks.discard(key)   # Kafka has it already: no resend
                        self._acked.append(row.rowid)
                        cursor = row.rowid
                        continue
                    info = client.publish(row.topic, row.payload, qos=1)
                    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        # NO_CONN: the connection just dropped; this row will be resent later.
                        self._connected = False
                        break
                    self._inflight[info.mid] = (row, key)
                    if key is not None:
                        self._unconfirmed.pop(key, None)   # re-insert: order of last send
                        self._unconfirmed[key] = (row.rowid, now)
                    cursor = row.rowid
                    sent += 1
                if sent:
                    self.m_published.inc(sent)
                    self.m_inflight.set(len(self._inflight))
                    self.m_unconfirmed.set(len(self._unconfirmed))
            # Sleep only when there was nothing to send, and only until the next deadline: a
            # packet (PUBACK, ack) or a new reading (the queue's listener) wakes it earlier.
            timeout = 0.0 if sent else self._idle_timeout(now, last_read, last_flush, stopping)
            rc = self._io(client, timeout, rows_wanted=room > sent)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._connected = False
            now = time.monotonic()
            if self._acked and (now - last_flush >= s.ack_flush_s or len(self._acked) >= self._window):
                self._flush_acks()
                last_flush = now
        self._flush_acks()

    def _idle_timeout(self, now: float, last_read: float, last_flush: float,
                      stopping: bool) -> float:
        """How long the publisher may sleep: until the next time-driven step (reading the queue
        for other processes' rows, deleting acknowledged rows, a resend)."""
        s = self.settings
        until = [last_read + s.idle_poll_s]
        if self._acked:
            until.append(last_flush + s.ack_flush_s)
        if self._rewind_at is not None:
            until.append(self._rewind_at)
        if self._unconfirmed:
            until.append(next(iter(self._unconfirmed.values()))[1] + self._timeout_s)
        if stopping:
            until.append(now + 0.05)
        return max(0.0, min(until) - now)

    def _rewind_reason(self, now: float) -> str | None:
        if self._rewind_at is not None and now >= self._rewind_at:
            return "no_subscriber"
        if self._unconfirmed:
            sent_at = next(iter(self._unconfirmed.values()))[1]
            if now - sent_at >= self._timeout_s:
                # Nothing confirmed for a whole timeout: wait longer next time (a bridge or Kafka
                # outage would otherwise make every device resend its window over and over).
                self._timeout_s = min(self._timeout_s * 2, self.settings.ack_timeout_max_s)
                return "ack_timeout"
        return None

    @staticmethod
    def _row_key(row: Row) -> tuple[str, int] | None:
        """(boot_id, seq) the bridge acknowledges this row by, or None for a row without an event
        id (the recorder never writes one); such a row is confirmed on PUBACK so it cannot block
        the queue."""
        found = find_event_id(row.payload)
        return (found[1], found[2]) if found is not None and found[2] == row.seq else None

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
                    if self._io(client, 0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
            except Exception:
                pass
        self._close_socket(client)

    # paho callbacks (run inside _io(): client.loop_read() on our thread) ----------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = (reason_code, properties)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected:
            log.warning("mqtt disconnected", extra={"reason": str(reason_code),
                                                    "inflight": len(self._inflight)})
            self.last_error = f"disconnected: {reason_code}"
        self._connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # the status message
        row, key = entry
        code = reason_code.value
        if reason_code.is_failure:
            # Anything >= 0x80 is a refusal (e.g. 0x87 not authorised by the ACL).
            self.m_rejected.labels(reason=str(reason_code)).inc()
            self._reject_log.error("broker rejected reading; moved to the rejected table", key=code,
                                   extra={"topic": row.topic, "seq": row.seq, "stream": row.stream,
                                          "reason": str(reason_code), "reason_code": code})
            self.queue.reject(row.rowid, str(reason_code))
            if key is not None:
                self._unconfirmed.pop(key, None)
        elif code == NO_MATCHING_SUBSCRIBERS:
            # Not delivered: no bridge subscribed (e.g. Mosquitto restarted and the bridge's shared
            # subscription is not back yet); the broker dropped it. Resend soon, backing off.
            self.m_not_delivered.inc()
            retry_at = time.monotonic() + self._nosub_retry_s
            if self._rewind_at is None or retry_at < self._rewind_at:
                self._rewind_at = retry_at
            self._nosub_retry_s = min(self._nosub_retry_s * 2, self.settings.ack_timeout_s)
        else:
            self._nosub_retry_s = self.settings.reconnect_min_s
            if key is None:   # delivery="broker", or a row the bridge cannot acknowledge
                self._acked.append(row.rowid)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            self.last_error = f"ack subscription refused: {refused}"
            log.error("the broker refused the ack subscription: nothing will be confirmed end to "
                      "end; let the device read its ack topic or set mqtt.delivery = 'broker'",
                      extra={"topic": self.settings.ack_topic, "reasons": refused})

    def _on_ack_message(self, client, userdata, msg) -> None:
        if msg.topic != self.settings.ack_topic:
            return
        try:
            acks = decode_acks(msg.payload)
        except ValueError as e:
            self.m_bad_acks.inc()
            log.warning("ignored a bad acknowledgement", extra={"error": str(e)[:200]})
            return
        unconfirmed, early, acked = self._unconfirmed, self._early_acks, self._acked
        before = len(acked)
        for boot, ranges in acks.items():
            for lo, hi in ranges:
                if hi - lo >= 100_000:
                    # A huge range: look up what we hold instead of walking it.
                    keys = [k for k in unconfirmed if k[0] == boot and lo <= k[1] <= hi]
                    for k in keys:
                        acked.append(unconfirmed.pop(k)[0])
                    continue
                for seq in range(lo, hi + 1):
                    hit = unconfirmed.pop((boot, seq), None)
                    if hit is not None:
                        acked.append(hit[0])
                    else:
                        early.add((boot, seq))
        if len(early) > EARLY_ACKS_MAX:
            early.clear()   # costs resends (duplicates), never a loss
        if len(acked) > before:
            self._timeout_s = self.settings.ack_timeout_s   # progress: back to the short timeout
        self.m_unconfirmed.set(len(unconfirmed))
