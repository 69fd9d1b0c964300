"""End-to-end delivery acknowledgements: what the bridge tells a device Kafka has confirmed.

A broker's PUBACK only says the broker took a message; the broker can still drop it (MQTT v5 reason
0x10 "no matching subscribers" when the bridge's shared subscription is missing after a broker
restart), lose it (a kill -9 between autosaves) or hold it for an offline group member. So the
bridge, once Kafka has confirmed a reading (data topic or dead-letter topic), publishes the reading's
(boot_id, seq) to the device's own ack topic, and the agent deletes a reading only then.

Wire format (QoS 1, compact JSON, one message per device per flush, ranges inclusive):

    topic   smartcity/ack/v1/{device_id}
    payload {"v":1,"acks":{"<boot_id>":[[lo,hi],[lo,hi],...],...}}

The ack topic lives outside `smartcity/v1/`, the bridge's subscription, so a bridge never receives
its own acknowledgements (MQTT v5 forbids No Local on shared subscriptions). The broker's ACL lets a
device read only its own ack topic and only the bridge write to it.

One home for the format: the bridge encodes with AckRanges, the agent decodes with decode_acks.
"""
from __future__ import annotations

import json
import re
from typing import Iterable

from .envelope import TOPIC_PREFIX

ACK_TOPIC_PREFIX = "smartcity/ack/v1"
ACK_FORMAT_VERSION = 1

# A contract-valid record is a flat JSON object whose strings cannot hold an unescaped quote, so the
# first `"event_id":"..."` in its bytes is its event id; cheaper than a second json.loads per message.
_EVENT_ID_RE = re.compile(rb'"event_id"\s*:\s*"([^"\\]{1,200})"')


def ack_topic(device_id: str) -> str:
    return f"{ACK_TOPIC_PREFIX}/{device_id}"


def split_event_id(event_id: str) -> tuple[str, str, int]:
    """(device_id, boot_id, seq) of `{device_id}:{boot_id}:{seq}`, or ValueError."""
    device_id, boot_id, seq = event_id.rsplit(":", 2)
    if not device_id or not boot_id or not seq.isdigit():
        raise ValueError(f"not an event id: {event_id!r}")
    return device_id, boot_id, int(seq)


def find_event_id(payload: bytes) -> tuple[str, str, int] | None:
    """(device_id, boot_id, seq) read from a record's bytes without parsing it, or None."""
    m = _EVENT_ID_RE.search(payload)
    if m is None:
        return None
    try:
        return split_event_id(m.group(1).decode())
    except (ValueError, UnicodeDecodeError):
        return None


def to_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted, merged inclusive ranges: [5, 1, 2, 3, 7] -> [[1, 3], [5, 5], [7, 7]]."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


class AckRanges:
    """Seqs confirmed per device and boot, collected between flushes (the bridge's I/O thread)."""

    __slots__ = ("_by_device", "count")

    def __init__(self) -> None:
        self._by_device: dict[str, dict[str, list[int]]] = {}
        self.count = 0

    def add(self, device_id: str, boot_id: str, seq: int) -> None:
        boots = self._by_device.get(device_id)
        if boots is None:
            boots = self._by_device[device_id] = {}
        seqs = boots.get(boot_id)
        if seqs is None:
            seqs = boots[boot_id] = []
        seqs.append(seq)
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def drain(self) -> list[tuple[str, bytes]]:
        """(ack topic, payload) per device; empties the collection."""
        by_device, self._by_device, self.count = self._by_device, {}, 0
        return [(ack_topic(device), encode_acks(boots)) for device, boots in by_device.items()]


def encode_acks(by_boot: dict[str, Iterable[int]]) -> bytes:
    doc = {"v": ACK_FORMAT_VERSION, "acks": {b: to_ranges(s) for b, s in by_boot.items()}}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_acks(payload: bytes) -> dict[str, list[tuple[int, int]]]:
    """{boot_id: [(lo, hi), ...]} or ValueError with what is wrong."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"ack is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("v") != ACK_FORMAT_VERSION or not isinstance(doc.get("acks"), dict):
        raise ValueError(f"ack is not version {ACK_FORMAT_VERSION} of the ack format")
    out: dict[str, list[tuple[int, int]]] = {}
    for boot, ranges in doc["acks"].items():
        if not isinstance(ranges, list):
            raise ValueError(f"ack ranges of boot {boot!r} are not a list")
        pairs = []
        for r in ranges:
            if (not isinstance(r, list) or len(r) != 2 or not all(type(x) is int for x in r)
                    or r[0] > r[1] or r[0] < 0):
                raise ValueError(f"bad ack range {r!r} for boot {boot!r}")
            pairs.append((r[0], r[1]))
        out[boot] = pairs
    return out


assert not ACK_TOPIC_PREFIX.startswith(TOPIC_PREFIX + "/"), "acks must not match the bridge's filter"
