"""paho's MQTT client with a cheaper receive path for a high-rate subscriber, and paho's own as
the fallback.

Profiling the bridge (docs/benchmarks.md) showed paho itself spending more time per message than
all of the bridge's own work, for reasons that have nothing to do with the protocol:
- it reads each packet with several recv() system calls (1 byte of command, 1 per length byte,
  then the body) and returns to select() after every packet;
- for every MQTT v5 PUBLISH it builds a `Properties` object (a fresh name table and a loop over
  its 27 names) even when the packet carries no property, which is nearly always, and an
  `MQTTMessage` whose `MQTTMessageInfo` holds a `threading.Condition` a subscriber never uses;
- it looks each message up in its per-topic callback tree, though the bridge registers none.

`FastClient` keeps paho for everything else (connect, session, subscribe, keepalive,
acknowledgements, TLS, reconnect) and changes only that path:
- `_sock_recv` serves reads from a user-space buffer filled by one recv() of up to 64 KiB, and
  `loop_read` keeps decoding packets until the socket is empty (bounded per call so the caller's
  loop still serves Kafka and sends acknowledgements);
- `_handle_publish` decodes a QoS 0/1 MQTT v5 PUBLISH directly into a slotted `Message`;
  `properties` is None when the packet has none, else paho's own `Properties`. Anything else
  (QoS 2, an invalid QoS, MQTT 3.1.1, a packet that does not decode, an invalid UTF-8 topic, a
  client with per-topic callbacks) goes to paho's own method, so paho's verdict and paho's
  MQTTMessage, never a second opinion;
- `ack_many` sends the PUBACKs that became due as one write instead of one queued packet (and
  one wake-up byte on paho's internal socketpair) each.

What stays paho's contract on both paths (tests/test_bridge_mqtt_client.py): on_message runs
holding paho's `_in_callback_mutex`; an exception it raises is logged through paho (`on_log`,
`enable_logger`: "Caught exception in on_message") and re-raised out of `loop()`/`loop_read()`
unless `suppress_exceptions` is set; the message is then not acknowledged (with manual_ack, or
QoS 1 without it) and paho keeps the packet, so the next `loop()` delivers it again (both classes
make that the next call, not the next bytes on the socket). Except at QoS 2: paho drops a QoS 2
message whose on_message raised (the bridge subscribes at QoS 1). A malformed packet makes
`loop()` return MQTT_ERR_PROTOCOL and closes the connection (nothing of it is delivered); on the
next connection the broker resends what was not acknowledged.

The overrides use private methods and attributes of paho-mqtt, so they are used only on the
release they were written and tested for (`FAST_PATH_PAHO`) and only while every private name
they use is there with the parameters they expect: `new_client()` checks that and otherwise
returns `PahoClient` (paho's own receive path, `ack_many` through paho's public `ack()`) with a
warning; `client.fast_path` says which one runs. docs/bridge.md says what upstream change would
make the override unnecessary.
"""
from __future__ import annotations

import inspect
import logging
import time

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

# The paho-mqtt release the fast receive path was written against and tested on.
FAST_PATH_PAHO = "2.2.0"
# paho's private methods the fast path calls or overrides, with their parameters (after self).
_PAHO_METHODS = {
    "_sock_recv": ("bufsize",), "_sock_close": (), "_packet_read": (), "_loop_rc_handle": ("rc",),
    "_handle_publish": (), "_send_puback": ("mid",), "_easy_log": ("level", "fmt", "args"),
    "_packet_queue": ("command", "packet", "mid", "qos", "info"),
}
# paho's private instance attributes it reads.
_PAHO_ATTRIBUTES = ("_sock", "_in_packet", "_protocol", "_manual_ack", "_userdata", "_on_message",
                    "_in_callback_mutex", "suppress_exceptions")

_READ_SIZE = 65536
# Socket reads per loop_read call before control goes back to the caller's loop: 4 x 64 KiB is
# some 800 records of ~300 bytes, a few milliseconds of work.
_READS_PER_CALL = 4
_PUBACK = 0x40
_PUBACK_HEAD = bytes((_PUBACK, 2))   # remaining length 2: the packet id only
_OK = mqtt.MQTT_ERR_SUCCESS
_AGAIN = mqtt.MQTT_ERR_AGAIN


def paho_version() -> str:
    return getattr(paho.mqtt, "__version__", "unknown")


def fast_path_problem() -> str | None:
    """Why the fast receive path cannot run on the installed paho-mqtt, or None when it can."""
    version = paho_version()
    if version != FAST_PATH_PAHO:
        return f"paho-mqtt {version} is installed; the fast receive path was written for {FAST_PATH_PAHO}"
    for name, params in _PAHO_METHODS.items():
        method = getattr(mqtt.Client, name, None)
        if not callable(method):
            return f"paho-mqtt has no Client.{name}"
        got = tuple(inspect.signature(method).parameters)[1:]
        if got != params:
            return f"paho-mqtt's Client.{name} takes {got}, not {params}"
    try:
        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    except Exception as e:  # noqa: BLE001 - whatever it is, the fast path cannot trust this paho
        return f"paho-mqtt's Client() failed: {type(e).__name__}: {e}"
    missing = [a for a in _PAHO_ATTRIBUTES if not hasattr(probe, a)]
    if missing:
        return f"paho-mqtt's Client has no {', '.join(missing)}"
    if not isinstance(probe._in_packet, dict) or not {"command", "packet"} <= probe._in_packet.keys():
        return "paho-mqtt's Client._in_packet has no 'command' and 'packet'"
    return None


def new_client(*args, **kwargs) -> PahoClient:
    """The bridge's MQTT client (paho's Client arguments): a `FastClient` when the installed paho
    is the one its receive path was written for, else paho's own receive path (`PahoClient`) with
    a warning. `client.fast_path` says which."""
    problem = fast_path_problem()
    if problem is None:
        return FastClient(*args, **kwargs)
    log.warning("paho's own MQTT receive path in use (slower): the fast path does not fit the "
                "installed paho-mqtt", extra={"reason": problem, "paho_version": paho_version(),
                                              "fast_path_paho": FAST_PATH_PAHO})
    return PahoClient(*args, **kwargs)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """MQTT variable byte integer at buf[pos]: (value, position after it)."""
    value, mult = 0, 1
    for i in range(4):
        b = buf[pos + i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos + i + 1
        mult *= 128
    raise ValueError("variable byte integer longer than 4 bytes")


class Message:
    """What on_message receives from the direct decoder: MQTTMessage's attributes, topic as str."""
    __slots__ = ("topic", "payload", "qos", "dup", "retain", "mid", "properties", "timestamp")

    def __init__(self, topic: str, payload: bytes, qos: int, dup: bool, retain: bool, mid: int,
                 properties: Properties | None, timestamp: float):
        self.topic, self.payload, self.qos, self.dup, self.retain = topic, payload, qos, dup, retain
        self.mid, self.properties, self.timestamp = mid, properties, timestamp


class PahoClient(mqtt.Client):
    """paho's client as it is (the fallback), with the bridge's batched acknowledgement, and
    `loop()` going back to a packet whose on_message raised."""
    fast_path = False
    _reread = False

    def loop(self, timeout: float = 1.0) -> mqtt.MQTTErrorCode:
        if self._reread:
            # An exception out of on_message left its packet with paho (and, on the fast path,
            # what was read with it in the buffer), where select() does not see it: read it now,
            # not when the next bytes arrive (a keepalive later).
            self._reread = False
            rc = self.loop_read()
            if rc != _OK:
                return rc
        return super().loop(timeout)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        try:
            return super().loop_read(max_packets)
        except BaseException:
            self._reread = True
            raise

    def ack_many(self, mids: list[int]) -> mqtt.MQTTErrorCode:
        """PUBACK each QoS 1 packet id (manual_ack), in order."""
        rc = _OK
        for mid in mids:
            rc = self.ack(mid, 1)
            if rc != _OK:
                return rc
        return rc


class FastClient(PahoClient):
    """paho's client with the buffered, direct receive path (module docstring). Use it through
    new_client(), which checks that the installed paho is the one it was written for."""
    fast_path = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._reads_left = _READS_PER_CALL
        # Decode PUBLISH directly: MQTT v5 only, and only while no per-topic callback exists.
        self._direct = self._protocol == mqtt.MQTTv5

    def message_callback_add(self, sub: str, callback) -> None:
        # Per-topic callbacks are paho's business: from now on every PUBLISH goes through paho.
        self._direct = False
        super().message_callback_add(sub, callback)

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            if self._reads_left <= 0:
                # Budget spent: behave like an empty socket; paho keeps any half-read packet
                # and continues it on the next call (select() sees the unread bytes).
                raise BlockingIOError()
            self._reads_left -= 1
            data = super()._sock_recv(_READ_SIZE)
            if len(data) <= bufsize:
                return data          # includes b"" = connection closed, which paho handles
            self._rbuf, self._rpos = data, bufsize
            return data[:bufsize]
        end = pos + bufsize
        self._rpos = end
        return buf[pos:end]

    def _sock_close(self) -> None:
        # Bytes of a dead connection must never be parsed as the start of the next one.
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        if self._sock is None:
            return mqtt.MQTT_ERR_NO_CONN
        self._reads_left = _READS_PER_CALL
        try:
            while True:
                rc = self._packet_read()
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc == _AGAIN:
                    if self._rpos < len(self._rbuf):
                        continue         # paho's per-call chunk limit, not an empty socket
                    return _OK
                if self._sock is None:
                    return mqtt.MQTT_ERR_NO_CONN
        except BaseException:
            self._reread = True      # see PahoClient.loop
            raise

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        on_message = self._on_message
        if qos > 1 or not self._direct or on_message is None:
            return super()._handle_publish()
        packet = bytes(self._in_packet["packet"])
        try:
            end = 2 + ((packet[0] << 8) | packet[1])
            topic = packet[2:end]
            mid = 0
            if qos:
                mid = (packet[end] << 8) | packet[end + 1]
                end += 2
            plen, start = _varint(packet, end)
            props = None
            if plen:
                props = Properties(PacketTypes.PUBLISH)
                props.unpack(packet[end:start + plen])
            payload = packet[start + plen:]
            if not topic or start + plen > len(packet):
                raise ValueError("empty topic or truncated packet")
            topic_s = topic.decode()
        except Exception:  # noqa: BLE001 - paho decodes it and says what is wrong
            return super()._handle_publish()
        msg = Message(topic_s, payload, qos, bool(header & 0x08), bool(header & 0x01), mid, props,
                      time.monotonic())
        # As paho's _handle_on_message: under its callback mutex, errors logged through paho and
        # raised unless suppress_exceptions (then, with manual_ack, the message stays unacknowledged).
        # (acquire/release rather than `with`: 0.2 us less per message, measured.)
        lock = self._in_callback_mutex
        lock.acquire()
        try:
            on_message(self, self._userdata, msg)
        except Exception as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
            if not self.suppress_exceptions:
                raise
        finally:
            lock.release()
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return _OK

    def ack_many(self, mids: list[int]) -> mqtt.MQTTErrorCode:
        """PUBACK (reason Success, which MQTT v5 lets us send without reason code) for each QoS 1
        packet id, in order, written as one buffer."""
        if not mids:
            return _OK
        packet = b"".join(_PUBACK_HEAD + mid.to_bytes(2, "big") for mid in mids)
        return self._packet_queue(_PUBACK, packet, mids[-1], 1)
