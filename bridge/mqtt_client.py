"""paho's MQTT client with a cheaper receive path for a high-rate subscriber.

Profiling the bridge (docs/benchmarks.md) showed paho itself spending more time per message than
all of the bridge's own work, for three reasons that have nothing to do with the protocol:
- it reads each packet with several recv() system calls (1 byte of command, 1 per length byte,
  then the body) and returns to select() after every packet;
- for every MQTT v5 PUBLISH it builds a `Properties` object (a fresh name table and a loop over
  its 27 names) even when the packet carries no property, which is nearly always;
- it looks each message up in its per-topic callback tree, though the bridge registers none.

`BridgeMqttClient` keeps paho for everything else (connect, session, subscribe, keepalive,
acknowledgements, TLS, reconnect) and changes only that path:
- `_sock_recv` serves reads from a user-space buffer filled by one recv() of up to 64 KiB, and
  `loop_read` keeps decoding packets until the socket is empty (bounded per call so the caller's
  loop still serves Kafka and sends acknowledgements);
- `_handle_publish` decodes a QoS 0/1 PUBLISH directly into a `Message` (paho's MQTTMessage
  carries a threading.Condition per message that a subscriber never uses); `properties` is None
  when the packet has none, else paho's own `Properties`. Anything unusual (QoS 2, a packet that
  does not decode) goes to paho's original method and arrives as paho's MQTTMessage;
- `ack_many` sends the PUBACKs that became due as one write instead of one queued packet (and
  one wake-up byte on paho's internal socketpair) each.

It overrides private methods of paho-mqtt, so the version is pinned (pyproject.toml) and every
bridge test runs through this class.
"""
from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_READ_SIZE = 65536
# Socket reads per loop_read call before control goes back to the caller's loop: 4 x 64 KiB is
# some 800 records of ~300 bytes, a few milliseconds of work.
_READS_PER_CALL = 4
_PUBACK = 0x40
_PUBACK_HEAD = bytes((_PUBACK, 2))   # remaining length 2: the packet id only
_OK = mqtt.MQTT_ERR_SUCCESS
_AGAIN = mqtt.MQTT_ERR_AGAIN


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


class BridgeMqttClient(mqtt.Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._reads_left = _READS_PER_CALL

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

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if qos == 2 or self._protocol != mqtt.MQTTv5 or self.on_message is None:
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
        except Exception:  # noqa: BLE001 - let paho decode it and report what is wrong
            return super()._handle_publish()
        self.on_message(self, self._userdata, Message(topic_s, payload, qos, bool(header & 0x08),
                                                      bool(header & 0x01), mid, props, time.monotonic()))
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
