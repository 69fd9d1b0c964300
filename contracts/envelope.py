"""Envelope helpers shared by producers: event ids, timestamps, MQTT topics."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from .schema import BY_STREAM, STREAMS

TOPIC_PREFIX = "smartcity/v1"
_TOPIC_RE = re.compile(r"^smartcity/v1/([^/+#]+)/([^/+#]+)$")


def event_id(device_id: str, boot_id: str, seq: int) -> str:
    """Deterministic: the same reading (device, boot, seq) always has the same id. The boot id keeps
    ids unique even if the persisted sequence counter were lost (e.g. a re-flashed SD card)."""
    return f"{device_id}:{boot_id}:{seq}"


def format_ts(t: datetime | float) -> str:
    """UTC ISO-8601 with milliseconds and Z. Accepts an aware datetime or a Unix time."""
    if not isinstance(t, datetime):
        t = datetime.fromtimestamp(t, tz=timezone.utc)
    elif t.tzinfo is None:
        raise ValueError("naive datetime: event times must be timezone-aware")
    t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def mqtt_topic(device_id: str, stream: str) -> str:
    if stream not in BY_STREAM:
        raise ValueError(f"unknown stream {stream!r}; known: {list(STREAMS)}")
    if not device_id or any(c in device_id for c in "/+#"):
        raise ValueError(f"device_id {device_id!r} must be non-empty without / + #")
    return f"{TOPIC_PREFIX}/{device_id}/{stream}"


def parse_mqtt_topic(topic: str) -> tuple[str, str]:
    """(device_id, stream) of a data topic, or ValueError."""
    m = _TOPIC_RE.fullmatch(topic)
    if not m or m.group(2) not in BY_STREAM:
        raise ValueError(f"not a smartcity data topic: {topic!r}")
    return m.group(1), m.group(2)
