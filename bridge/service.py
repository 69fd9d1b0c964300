"""The bridge process: MQTT v5 shared subscription in, Kafka out, acknowledged only after Kafka.

Why it loses nothing:
- manual_ack: paho does not PUBACK on arrival; a message is acknowledged once Kafka confirmed it
  (acks=all, idempotent producer) AND every message that arrived before it was confirmed too
  (AckWindow), so the broker never forgets a message that is not in Kafka.
- Persistent session: clean_start=False on every connect plus a session expiry. A crash, a kill -9
  or a restart of either side leaves the unacknowledged messages with the broker, which resends
  them (dup=1) when we reconnect and queues new ones for us meanwhile.
- Bounded in-flight: CONNECT carries receive-maximum = mqtt.max_inflight, so while Kafka is down
  the broker stops sending after that many unacknowledged messages and holds the rest.
- Acknowledgements of an older connection are never sent on a newer one: packet ids are reused
  once acknowledged, so an old id could acknowledge a different message. On every (re)connect the
  window is reset; the broker resends what was unacknowledged, which may duplicate a record in
  Kafka (at-least-once; consumers deduplicate on event_id) but never loses one.
- Bad input goes to the dead-letter topic with its reason, and is acknowledged only once the DLQ
  write is confirmed: nothing is dropped and nothing blocks the stream.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, Producer
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from smartcity.contracts.acks import AckRanges, find_event_id
from smartcity.runtime.mqtt import apply_auth_tls
from prometheus_client import CollectorRegistry, Counter

from smartcity.runtime.obs import counter_fn, gauge_fn, serve_http, summary_fn, value

from .config import BridgeSettings, kafka_config
from .core import (BRIDGE_ERROR, DLQ_REASONS, HEADERS_TOO_LARGE, KAFKA_REJECTED, AckWindow, Rejection,
                   Router, covering_filters, inspect, user_properties_over)
from .mqtt_client import new_client

log = logging.getLogger(__name__)


_B0, _B1 = b"0", b"1"
# What a minimal DLQ copy keeps (each value cut to 1 KiB) when Kafka refused the full one.
_MINIMAL_HEADERS = frozenset(("mqtt.topic", "mqtt.qos", "mqtt.dup", "mqtt.retain", "bridge.received_ms",
                              "bridge.id", "dlq.reason", "dlq.detail", "dlq.original_bytes", "dlq.truncated"))
_MINIMAL_BYTES = 16 * 1024
# Retained presence of each shared-group member: {PRESENCE_PREFIX}{group}/{bridge_id}.
PRESENCE_PREFIX = "smartcity/bridge/v1/"


class Bridge:
    def __init__(self, settings: BridgeSettings, registry: CollectorRegistry | None = None):
        self.s = settings
        self.router = Router(settings.routes, raw_topics=settings.raw_topics)
        self.window = AckWindow()
        self.registry = registry if registry is not None else CollectorRegistry()
        self._bid = settings.bridge_id.encode()
        self._ack_lock = threading.Lock()
        self._stop = threading.Event()
        self._draining = False
        self._connected = False
        # True once the broker granted the subscription on the current connection. Only from then
        # on does the broker keep messages for this (persistent) session: what devices publish
        # before a bridge group has ever subscribed has no one to be queued for.
        self._subscribed = False
        self._kafka_up = True
        self._kafka_down_since: float | None = None
        self._fatal: str | None = None
        self._loop_error: str | None = None
        self._last_received = time.monotonic()
        self._started = time.monotonic()
        self._latencies: deque[float] = deque(maxlen=4096)
        self._deferred = 0
        # End-to-end acknowledgements: (device, boot, seq) that Kafka confirmed, published to each
        # device's ack topic by the I/O loop every ack_flush_s (contracts.acks).
        self.acks = AckRanges()
        self._next_ack_flush = 0.0
        # Messages waiting for room in the producer's local queue, oldest first (I/O thread only):
        # produce() never blocks, never sleeps and never polls; the I/O loop produces from here.
        self._pending: deque[tuple] = deque()
        # (due time, message) for DLQ writes Kafka refused: retried later, never by sleeping.
        self._delayed: deque[tuple[float, tuple]] = deque()
        # Stable identity (issue 9): the session the broker resumed, and the group's members.
        self._session_present = False
        self._data_sub_mid: int | None = None
        self._presence_topic = f"{PRESENCE_PREFIX}{settings.mqtt.group}/{settings.bridge_id}"
        self._presence_on = settings.mqtt.presence and not settings.retire
        self._members: dict[str, bool] = {}       # member bridge_id -> online, from its presence
        self._unsubscribed_at: float | None = None   # retire: when the broker confirmed UNSUBSCRIBE
        self._retired = False
        self._connects = 0
        self._poll_stop = False
        self.producer: Producer | None = None
        self.client: mqtt.Client | None = None
        self.http = None
        self._poller: threading.Thread | None = None
        self._metrics()

    # metrics ---------------------------------------------------------------------------------
    def _metrics(self) -> None:
        r = self.registry
        # Per-message counts are plain attributes, one writer thread each and no lock: the hot
        # path pays an int increment, the scrape reads them (runtime.obs callbacks).
        self.n_received = 0                       # MQTT thread only
        self.n_forwarded: dict[str, int] = {}     # Kafka delivery thread only
        self.lat_sum_s = 0.0
        self.lat_count = 0
        counter_fn(r, "bridge_received_total", "MQTT messages received", lambda: self.n_received)
        counter_fn(r, "bridge_forwarded_total", "Messages confirmed by Kafka in their data topic",
                   lambda: {(t,): n for t, n in list(self.n_forwarded.items())}, ("topic",))
        summary_fn(r, "bridge_kafka_delivery_seconds",
                   "Produce-to-acknowledgement times of the messages Kafka confirmed",
                   lambda: (self.lat_count, self.lat_sum_s))
        self.m_dlq = Counter("bridge_dlq_total", "Messages confirmed in the dead-letter topic",
                             ("reason",), registry=r)
        for reason in DLQ_REASONS:
            self.m_dlq.labels(reason=reason)
        self.m_acked = Counter("bridge_acked_total", "PUBACKs sent to the MQTT broker", registry=r)
        self.m_device_acks = Counter("bridge_device_ack_messages_total",
                                     "End-to-end acknowledgement messages published to devices",
                                     registry=r)
        self.m_device_acked = Counter("bridge_device_acked_readings_total",
                                      "Readings acknowledged end to end to their devices", registry=r)
        self.m_reconnects = Counter("bridge_reconnects_total", "Connections re-established",
                                    ("side",), registry=r)
        self.m_kafka_errors = Counter("bridge_kafka_errors_total", "Kafka client errors", ("code",),
                                      registry=r)
        self.m_retries = Counter("bridge_produce_retries_total",
                                 "Messages produced again after a failed delivery", registry=r)
        gauge_fn(r, "bridge_inflight", "Messages received and not yet acknowledged", lambda: len(self.window))
        gauge_fn(r, "bridge_produce_waiting",
                 "Messages waiting for room in the producer's local queue or for a DLQ retry",
                 lambda: len(self._pending) + len(self._delayed))
        gauge_fn(r, "bridge_kafka_delivery_seconds_p99", "p99 of the last 4096 Kafka delivery times",
                 lambda: self._quantile(0.99))
        gauge_fn(r, "bridge_kafka_delivery_seconds_p50", "median of the last 4096 Kafka delivery times",
                 lambda: self._quantile(0.50))
        gauge_fn(r, "bridge_mqtt_connected", "1 while connected to the MQTT broker",
                 lambda: int(self._connected))
        gauge_fn(r, "bridge_mqtt_fast_path", "1: the fast MQTT receive path runs; 0: paho's own "
                 "(the installed paho-mqtt is not the one it was written for: see the log)",
                 lambda: int(getattr(self.client, "fast_path", False)))
        gauge_fn(r, "bridge_mqtt_subscribed", "1 once the broker granted the subscription on this connection",
                 lambda: int(self._subscribed))
        gauge_fn(r, "bridge_mqtt_session_present",
                 "1 when the broker resumed this bridge's session on the last connect (0: a new "
                 "session; what it queued for this id before, if anything, is gone)",
                 lambda: int(self._session_present))
        gauge_fn(r, "bridge_group_member_offline",
                 "Per member of the shared-subscription group (retained presence): 1 while it is "
                 "offline, its session queueing its share of the messages at the broker; 0 online",
                 lambda: {(k,): int(not v) for k, v in list(self._members.items())}, ("member",))
        self.m_taken_over = Counter("bridge_mqtt_session_taken_over_total",
                                    "Disconnects because another client connected with this client id",
                                    registry=r)
        gauge_fn(r, "bridge_kafka_up", "0 while every Kafka broker is unreachable",
                 lambda: int(self._kafka_up))
        gauge_fn(r, "bridge_seconds_since_last_message", "Seconds since the last MQTT message",
                 lambda: round(time.monotonic() - self._last_received, 3))

    def _quantile(self, q: float) -> float:
        xs = sorted(self._latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    def health(self) -> tuple[bool, dict]:
        idle = time.monotonic() - self._last_received
        problems = []
        if not self._connected:
            problems.append("mqtt disconnected")
        elif not self._subscribed:
            problems.append("mqtt subscription not granted")
        if not self._kafka_up:
            problems.append("kafka unreachable")
        if self._fatal:
            problems.append(f"kafka fatal: {self._fatal}")
        if self._loop_error:
            problems.append(f"io loop failed: {self._loop_error}")
        if self.s.idle_degraded_s > 0 and idle > self.s.idle_degraded_s:
            problems.append(f"no message for {idle:.0f}s")
        return not problems, {"status": "ok" if not problems else "degraded", "problems": problems,
                              "inflight": len(self.window), "bridge_id": self.s.bridge_id,
                              "seconds_since_last_message": round(idle, 1)}

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Bridge":
        conf = kafka_config(self.s.kafka)
        conf.update(error_cb=self._on_kafka_error, logger=logging.getLogger("bridge.librdkafka"))
        self.producer = Producer(conf)
        if self.s.http_port >= 0:
            self.http = serve_http(self.s.http_host, self.s.http_port, self.registry, self.health)
        self.client = self._mqtt_client()
        self._poller = threading.Thread(target=self._loop, name="bridge-loop", daemon=True)
        self._poller.start()
        log.info("bridge started", extra={"bridge_id": self.s.bridge_id, "client_id": self.s.client_id,
                                          "mqtt": f"{self.s.mqtt.host}:{self.s.mqtt.port}",
                                          "kafka": self.s.kafka.bootstrap_servers})
        return self

    @property
    def http_port(self) -> int | None:
        return self.http.server_port if self.http else None

    def _mqtt_client(self) -> mqtt.Client:
        m = self.s.mqtt
        c = new_client(CallbackAPIVersion.VERSION2, client_id=self.s.client_id,
                       protocol=mqtt.MQTTv5, manual_ack=True)
        apply_auth_tls(c, m)
        c.reconnect_delay_set(m.reconnect_min_s, m.reconnect_max_s)
        c.max_inflight_messages_set(m.max_inflight)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        if self._presence_on:
            # Retained, so members that start later learn it too; the broker sends it if we die.
            c.will_set(self._presence_topic, self._presence("offline"), qos=1, retain=True)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = m.session_expiry_s
        props.ReceiveMaximum = m.max_inflight
        # clean_start=False on EVERY connect (paho's default starts clean on the first one).
        c.connect_async(m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props)
        return c

    @property
    def subscription(self) -> list[str]:
        filters = covering_filters(r.mqtt_filter for r in self.router.routes)
        if self.s.mqtt.shared:
            return [f"$share/{self.s.mqtt.group}/{f}" for f in filters]
        return filters

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt connect refused", extra={"reason": str(reason_code)})
            return
        with self._ack_lock:
            # Packet ids of the previous connection must not be acknowledged on this one.
            dropped = self.window.reset()
        # Nor produced: the broker resends every QoS 1 message it has no PUBACK for (QoS 0 ones it
        # would not: they stay). Producing the old copies too would only pile up duplicates.
        self._pending = deque(i for i in self._pending if i[4][1] == 0)
        self._delayed = deque(i for i in self._delayed if i[1][4][1] == 0)
        self._connects += 1
        if self._connects > 1:
            self.m_reconnects.labels(side="mqtt").inc()
        self._connected = True
        self._session_present = bool(flags.session_present)
        if self.s.retire:
            # Take what the session holds (the broker sends it anyway) and stop the group from
            # routing more to it.
            self._unsubscribed_at = None
            client.unsubscribe(self.subscription)
        else:
            # Re-subscribing is harmless when the session kept the subscription, and repairs it if not.
            _, self._data_sub_mid = client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.subscription])
        if self._presence_on:
            client.subscribe(f"{PRESENCE_PREFIX}{self.s.mqtt.group}/+", options=SubscribeOptions(qos=0))
            client.publish(self._presence_topic, self._presence("online"), qos=1, retain=True)
        log.info("mqtt connected", extra={"session_present": flags.session_present,
                                          "dropped_unacked": dropped, "client_id": self.s.client_id})

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._data_sub_mid:  # the presence subscription: informative only
            if any(rc.is_failure for rc in reason_codes):
                log.warning("mqtt presence subscription refused", extra={"reasons": [str(r) for r in reason_codes]})
            return
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("mqtt subscription refused", extra={"filters": self.subscription,
                                                          "reasons": refused})
            return
        self._subscribed = True
        log.info("mqtt subscribed", extra={"filters": self.subscription})

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._unsubscribed_at = time.monotonic()
        log.info("mqtt unsubscribed (retiring)", extra={"filters": self.subscription})

    def _presence(self, state: str, **extra: Any) -> bytes:
        return json.dumps({"bridge_id": self.s.bridge_id, "client_id": self.s.client_id, "state": state,
                           "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}).encode()

    def _on_presence(self, topic: str, payload: bytes) -> None:
        member = topic.rpartition("/")[2]
        if not payload:                           # cleared: retired for good
            self._members.pop(member, None)
            return
        try:
            self._members[member] = json.loads(payload).get("state") == "online"
        except (ValueError, AttributeError):
            log.warning("unreadable bridge presence", extra={"topic": topic})

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected = False
        self._subscribed = False
        if reason_code == 142:  # Session taken over
            self.m_taken_over.inc()
            log.error("another client connected with this bridge's client id: do two replicas share "
                      "one bridge_id?", extra={"client_id": self.s.client_id})
        if not self._stop.is_set():
            log.warning("mqtt disconnected; reconnecting", extra={"reason": str(reason_code)})

    # hot path: MQTT network thread -----------------------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:  # mqtt_client.Message or MQTTMessage
        if msg.qos == 0 and msg.topic.startswith(PRESENCE_PREFIX):  # a group member's presence
            self._on_presence(msg.topic, msg.payload)
            return
        if self._draining:
            # Not produced, not acknowledged: the broker resends it to the next session.
            self._deferred += 1
            return
        self._last_received = time.monotonic()
        self.n_received += 1
        topic = msg.topic
        payload = msg.payload
        target = self.router.route(topic)
        try:
            rejection = inspect(payload, target, max_bytes=self.s.max_payload_bytes,
                                check_contract=self.s.validate_contracts,
                                check_device=self.s.check_device_id)
        except Exception as e:  # noqa: BLE001 - a payload must never stop the bridge
            log.exception("inspecting a message failed; dead-lettering it")
            rejection = Rejection(BRIDGE_ERROR, f"{type(e).__name__}: {e}"[:500])
        headers = [("mqtt.topic", topic), ("mqtt.qos", _B1 if msg.qos == 1 else str(msg.qos)),
                   ("mqtt.dup", _B1 if msg.dup else _B0), ("mqtt.retain", _B1 if msg.retain else _B0),
                   ("bridge.received_ms", str(int(time.time() * 1000))), ("bridge.id", self._bid)]
        props = msg.properties
        if props is not None:
            ups = getattr(props, "UserProperty", None)
            if ups:
                over = user_properties_over(ups, self.s.max_user_properties, self.s.max_user_property_bytes)
                if over is None:
                    headers.extend((f"mqtt.up.{k}", v) for k, v in ups)
                elif rejection is None:
                    rejection = Rejection(HEADERS_TOO_LARGE, over)
                else:
                    rejection = Rejection(rejection.reason, f"{rejection.detail}; {over}")
        entry = self.window.add(msg.mid, msg.qos)
        if self.s.end_to_end_acks and target is not None and not target.raw:
            found = find_event_id(payload)
            # Only the topic's own device is acknowledged: a device cannot confirm another's data.
            if found is not None and found[0] == target.device_id:
                entry.append(found)
        if rejection is None:
            self._produce(target.topic, payload, target.key, headers, entry)
        else:
            self._produce_dlq(payload, target.key if target else None, headers, entry, rejection)

    def _produce(self, topic: str, value: bytes, key: bytes | None, headers: list, entry: list,
                 dlq_reason: str | None = None) -> None:
        """Hand one message to the producer. Never blocks, sleeps, polls or raises: it runs on the
        I/O thread, from on_message and from delivery callbacks inside producer.poll(). With the
        local queue full the message waits in _pending (in order) for the I/O loop; a message the
        producer refuses outright goes to the DLQ."""
        if self._pending:
            self._pending.append((topic, value, key, headers, entry, dlq_reason))
        elif not self._hand_over(topic, value, key, headers, entry, dlq_reason):
            self._pending.append((topic, value, key, headers, entry, dlq_reason))

    def _hand_over(self, topic: str, value: bytes, key: bytes | None, headers: list, entry: list,
                   dlq_reason: str | None) -> bool:
        """False only when the producer's local queue is full."""
        # The delivery report carries neither our headers nor the entry: the closure keeps what a
        # retry or a dead-lettering needs.
        def delivered(err, m):
            self._on_delivery(err, m, entry, topic, value, key, headers, dlq_reason)
        try:
            self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
        except BufferError:
            return False
        except Exception as e:  # noqa: BLE001 - KafkaException (MSG_SIZE_TOO_LARGE...), TypeError:
            # this message's problem, not the bridge's: it must not stop the I/O loop.
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            self.m_kafka_errors.labels(code=err.name() if err else type(e).__name__).inc()
            self._refused(topic, value, key, headers, entry, dlq_reason,
                          f"produce: {err.str() if err else e}", err.code() if err else None)
        return True

    def _serve_pending(self) -> None:
        """I/O loop: produce what waits for room (polling to free it) and the DLQ retries due."""
        delayed, pending = self._delayed, self._pending
        now = time.monotonic()
        while delayed and delayed[0][0] <= now:
            self._produce(*delayed.popleft()[1])
        while pending:
            item = pending.popleft()
            if not self._hand_over(*item):
                pending.appendleft(item)
                # Still full: wait for Kafka to confirm (the callbacks may queue retries: they go
                # to _pending, never into a nested poll).
                self.producer.poll(0.01)
                return

    def _refused(self, topic: str, value: bytes, key: bytes | None, headers: list, entry: list,
                 dlq_reason: str | None, why: str, code: int | None) -> None:
        """Kafka refused this message for good, in produce() or in its delivery report. A data
        message goes to the DLQ (without its user properties when it is too large); a refused DLQ
        copy becomes a minimal one (truncated payload, the bridge's own headers); a refused minimal
        copy is retried later. Nothing is acknowledged without a copy in Kafka, and nothing here
        stops the bridge."""
        if dlq_reason is None:
            log.error("kafka rejected a message; dead-lettering", extra={"topic": topic, "error": why})
            detail = f"{topic}: {why}"
            if code == KafkaError.MSG_SIZE_TOO_LARGE:
                kept = [h for h in headers if not h[0].startswith("mqtt.up.")]
                if len(kept) < len(headers):
                    detail += f"; {len(headers) - len(kept)} user properties dropped"
                    headers = kept
            self._produce_dlq(value, key, headers, entry, Rejection(KAFKA_REJECTED, detail[:500]))
        elif not any(h[0] == "dlq.minimal" for h in headers):
            log.error("dead-letter write refused; writing a minimal copy",
                      extra={"reason": dlq_reason, "error": why})
            minimal = [(k, v[:1024]) for k, v in headers if k in _MINIMAL_HEADERS]
            minimal += [("dlq.minimal", _B1), ("dlq.refused", why[:500])]
            if len(value) > _MINIMAL_BYTES:
                value = value[:_MINIMAL_BYTES]
                if not any(h[0] == "dlq.truncated" for h in minimal):
                    minimal.append(("dlq.truncated", _B1))
            self._produce(self.s.kafka.dlq_topic, value, key, minimal, entry, dlq_reason)
        else:
            # Even a minimal copy is refused: never acknowledge; retry later (never by sleeping
            # here: this runs on the I/O thread, and MQTT keepalives wait for it).
            log.error("dead-letter write failed; retrying in 1 s", extra={"error": why})
            self.m_retries.inc()
            self._delayed.append((time.monotonic() + 1.0, (topic, value, key, headers, entry, dlq_reason)))

    def _produce_dlq(self, payload: bytes, key: bytes | None, headers: list, entry: list,
                     rejection: Rejection) -> None:
        headers = headers + [("dlq.reason", rejection.reason), ("dlq.detail", rejection.detail),
                             ("dlq.original_bytes", str(len(payload)))]
        if len(payload) > self.s.dlq_max_bytes:
            payload = payload[:self.s.dlq_max_bytes]
            headers.append(("dlq.truncated", _B1))
        log.info("dead-lettered", extra={"reason": rejection.reason, "detail": rejection.detail[:200],
                                         "mqtt_topic": headers[0][1]})
        self._produce(self.s.kafka.dlq_topic, payload, key, headers, entry, rejection.reason)

    # Kafka delivery thread -------------------------------------------------------------------
    def _on_delivery(self, err, m, entry: list, topic: str, value: bytes, key: bytes | None,
                     headers: list, dlq_reason: str | None) -> None:
        if err is None:
            lat = m.latency()
            if lat is not None:
                self._latencies.append(lat)
                self.lat_sum_s += lat
                self.lat_count += 1
            if dlq_reason is not None:
                self.m_dlq.labels(reason=dlq_reason).inc()
            else:
                self.n_forwarded[topic] = self.n_forwarded.get(topic, 0) + 1
            if not self._kafka_up:
                self._set_kafka_up(True)
            AckWindow.complete(entry)
            if len(entry) > 3:
                # In Kafka (data or dead-letter topic): the device may delete the reading.
                self.acks.add(*entry[3])
            return
        self.m_kafka_errors.labels(code=err.name()).inc()
        if err.retriable() or err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT):
            self.m_retries.inc()
            self._produce(topic, value, key, headers, entry, dlq_reason)
        else:
            # Kafka refused it for good (too big for the broker, unknown topic...): keep it in the DLQ.
            self._refused(topic, value, key, headers, entry, dlq_reason, err.str(), err.code())

    def _on_kafka_error(self, err: KafkaError) -> None:
        self.m_kafka_errors.labels(code=err.name()).inc()
        if err.fatal():
            self._fatal = err.str()
            log.critical("kafka producer fatal error; exiting without acknowledging",
                         extra={"error": err.str()})
            self._stop.set()
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._set_kafka_up(False)

    def _set_kafka_up(self, up: bool) -> None:
        if up == self._kafka_up:
            return
        self._kafka_up = up
        if up:
            self.m_reconnects.labels(side="kafka").inc()
            log.warning("kafka reachable again", extra={
                "down_s": round(time.monotonic() - (self._kafka_down_since or time.monotonic()), 1)})
            self._kafka_down_since = None
        else:
            self._kafka_down_since = time.monotonic()
            log.warning("kafka unreachable; holding acknowledgements", extra={"inflight": len(self.window)})

    def _loop(self) -> None:
        try:
            self._io_loop()
        except Exception as e:  # noqa: BLE001 - a bug here must stop the process, not hang it
            # Without its I/O thread the process would look alive and do nothing. Nothing in flight
            # was acknowledged, so the broker redelivers it to the restarted bridge.
            self._loop_error = f"{type(e).__name__}: {e}"[:300]
            log.critical("bridge I/O loop failed; exiting so a supervisor restarts it", exc_info=True,
                         extra={"inflight": len(self.window)})
            self._stop.set()

    def _io_loop(self) -> None:
        """One thread does all the I/O: read one MQTT packet (paho's loop), serve Kafka delivery
        reports, send the PUBACKs that became due. A single thread avoids GIL hand-offs per
        message, and a PUBACK queued from paho's own thread is written at once instead of waking
        a network thread through its socketpair (measured: docs/benchmarks.md)."""
        producer, window, ack_lock, client = self.producer, self.window, self._ack_lock, self.client
        m = self.s.mqtt
        backoff = m.reconnect_min_s
        next_probe = 0.0
        ok = mqtt.MQTT_ERR_SUCCESS
        while not self._poll_stop:
            rc = client.loop(timeout=0.005)
            if rc != ok and not self._poll_stop:
                # Not connected (first start, broker restart, network): reconnect with backoff,
                # while still serving Kafka so nothing stalls.
                self._connected = False
                t_retry = time.monotonic() + backoff
                while time.monotonic() < t_retry and not self._poll_stop:
                    producer.poll(0.05)
                try:
                    client.reconnect()
                    backoff = m.reconnect_min_s
                except (OSError, ValueError) as e:
                    log.debug("mqtt reconnect failed", extra={"error": str(e)})
                    backoff = min(backoff * 2, m.reconnect_max_s)
                continue
            producer.poll(0)
            if self._pending or self._delayed:
                self._serve_pending()
            with ack_lock:
                ready = window.pop_ready()
                if ready:
                    # The subscription is QoS 1, so the broker delivers QoS 0 or 1 only.
                    client.ack_many([mid for mid, qos in ready if qos == 1])
                    self.m_acked.inc(len(ready))
            if self.acks.count:
                self._flush_device_acks(client)
            if not self._kafka_up and time.monotonic() > next_probe:
                # Idle bridges get no delivery to tell them Kafka is back; ask for metadata.
                next_probe = time.monotonic() + 2.0
                try:
                    if producer.list_topics(timeout=0.5).brokers:
                        self._set_kafka_up(True)
                except Exception:  # noqa: BLE001 - still down
                    pass

    def _flush_device_acks(self, client, force: bool = False) -> None:
        """Publish what Kafka confirmed to each device's ack topic, at most every ack_flush_s (or
        at once when many are pending): one QoS 1 message per device, seqs merged into ranges.
        Lost acknowledgements only make the device send a reading again (a duplicate, removed by
        event_id downstream), never lose one."""
        now = time.monotonic()
        if not force and now < self._next_ack_flush and self.acks.count < 10_000:
            return
        self._next_ack_flush = now + self.s.ack_flush_s
        n = self.acks.count
        out = self.acks.drain()
        for topic, payload in out:
            client.publish(topic, payload, qos=1)
        self.m_device_acks.inc(len(out))
        self.m_device_acked.inc(n)

    # shutdown --------------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def run(self) -> int:
        """Block until SIGTERM/SIGINT (or a fatal Kafka error), then drain. Exit code for main()."""
        if self.s.retire:
            self._wait_retired()
        self._stop.wait()
        return self.shutdown()

    def _wait_retired(self) -> None:
        """Retire mode: done once the broker confirmed the UNSUBSCRIBE, everything received is
        acknowledged, and nothing arrived for retire_idle_s: the session holds nothing more."""
        while not self._stop.wait(0.2):
            t = self._unsubscribed_at
            if (t is not None and self._connected and not len(self.window) and not self._pending
                    and not self._delayed
                    and time.monotonic() - max(t, self._last_received) >= self.s.retire_idle_s):
                self._retired = True
                log.warning("retired: the session's queue is in Kafka; ending the session",
                            extra={"client_id": self.s.client_id, "received": self.n_received})
                self._stop.set()

    def shutdown(self) -> int:
        self._draining = True
        drained = True
        if self._fatal is None:
            # The loop thread keeps serving Kafka and sending PUBACKs until the window is empty.
            deadline = time.monotonic() + self.s.drain_timeout_s
            while len(self.window) and time.monotonic() < deadline and self._poller.is_alive():
                time.sleep(0.02)
            drained = len(self.window) == 0
            time.sleep(0.05)  # one more loop turn writes the last PUBACKs
        self._poll_stop = True
        if self._poller:
            self._poller.join(5)
        if self.client is not None and self._connected and self.acks.count:
            # The broker handles this PUBLISH before the DISCONNECT below: the devices hear of
            # the last confirmed readings now instead of sending them again after a timeout.
            self._flush_device_acks(self.client, force=True)
        if self.client is not None:
            if self._retired and self.s.mqtt.presence:
                self.client.publish(self._presence_topic, b"", qos=1, retain=True)   # clear it
            elif self._presence_on and self._connected:
                # (A normal DISCONNECT suppresses the will.)
                self.client.publish(self._presence_topic, self._presence("offline", clean=True),
                                    qos=1, retain=True)
            props = Properties(PacketTypes.DISCONNECT)
            # Retired: the session ends now (it is empty); else the broker keeps it, and queues.
            props.SessionExpiryInterval = 0 if self._retired else self.s.mqtt.session_expiry_s
            self.client.disconnect(properties=props)  # no loop thread: paho writes it at once
            if self._loop_error is None:
                # (Not after a failed loop: flushing runs the same delivery callbacks again.)
                self.producer.flush(5)
        if self.http:
            self.http.shutdown()
        log.warning("bridge stopped", extra={"drained": drained, "inflight_left": len(self.window),
                                             "deferred_to_next_session": self._deferred,
                                             "received": self.n_received,
                                             "acked": value(self.m_acked)})
        if self._fatal:
            return 3
        if self._loop_error:
            return 4
        return 0 if drained else 1


def install_signal_handlers(bridge: Bridge) -> None:
    signal.signal(signal.SIGTERM, bridge.request_stop)
    signal.signal(signal.SIGINT, bridge.request_stop)
