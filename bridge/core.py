"""Pure parts of the bridge: topic routing, payload inspection, the ordered acknowledgement window.

Nothing here touches a socket, so each rule is testable on its own and the hot path stays cheap:
one regex match per distinct MQTT topic (cached), one contracts.jsontext.loads (json.loads behind
the checks the lake applies too) and one generated contract check (contracts.checker) per message.
"""
from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from smartcity.contracts import jsontext
from smartcity.contracts.schema import BY_NAME
from smartcity.contracts.validate import checker, violations

DEFAULT_ROUTE = "smartcity/v1/{device_id}/{stream} -> {stream}_data -> {device_id}"
# The agent's retained online/offline presence (its MQTT will) is not a record: it goes to its own
# compacted topic, unvalidated, instead of filling the DLQ with "no contract".
STATUS_ROUTE = "smartcity/v1/{device_id}/status -> device_status -> {device_id}"
DEFAULT_ROUTES = (STATUS_ROUTE, DEFAULT_ROUTE)
DEFAULT_RAW_TOPICS = ("device_status",)
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024

# DLQ reasons (header dlq.reason); a closed set so dashboards can count them.
TOO_LARGE = "too_large"
NOT_JSON = jsontext.NOT_JSON            # not UTF-8, not one JSON value, NaN/Infinity (contracts.jsontext)
TOO_DEEP = jsontext.TOO_DEEP            # nesting beyond contracts.jsontext.MAX_DEPTH
DUPLICATE_KEY = jsontext.DUPLICATE_KEY  # an object with the same key twice
CONTRACT = "contract_invalid"
SPOOFED = "device_id_mismatch"
UNMAPPED = "unmapped_topic"
NO_CONTRACT = "no_contract"
KAFKA_REJECTED = "kafka_rejected"
BRIDGE_ERROR = "bridge_error"   # the bridge failed on this payload: a bug to fix, the payload kept
HEADERS_TOO_LARGE = "headers_too_large"  # MQTT v5 user properties past the bridge's bounds (dropped)
DLQ_REASONS = (TOO_LARGE, NOT_JSON, TOO_DEEP, DUPLICATE_KEY, CONTRACT, SPOOFED, UNMAPPED, NO_CONTRACT,
               KAFKA_REJECTED, BRIDGE_ERROR, HEADERS_TOO_LARGE)

_SEGMENT_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class RouteError(ValueError):
    pass


@dataclass(frozen=True)
class Route:
    """MQTT topic pattern with named single-level segments -> Kafka topic and key templates.

    "smartcity/v1/{device_id}/{stream} -> {stream}_data -> {device_id}"
    """
    pattern: str
    topic: str
    key: str | None
    regex: re.Pattern
    names: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> "Route":
        parts = [p.strip() for p in spec.split("->")]
        if len(parts) not in (2, 3) or not all(parts):
            raise RouteError(f"route {spec!r}: expected 'PATTERN -> TOPIC [-> KEY]'")
        pattern, topic = parts[0], parts[1]
        key = parts[2] if len(parts) == 3 else None
        names: list[str] = []
        rx = []
        for seg in pattern.split("/"):
            m = _SEGMENT_RE.fullmatch(seg)
            if m:
                if m.group(1) in names:
                    raise RouteError(f"route {spec!r}: segment {{{m.group(1)}}} used twice")
                names.append(m.group(1))
                rx.append(f"(?P<{m.group(1)}>[^/]+)")
            elif any(c in seg for c in "{}+#"):
                raise RouteError(f"route {spec!r}: segment {seg!r} must be literal or a whole {{name}}")
            else:
                rx.append(re.escape(seg))
        for tmpl in (topic, key) if key else (topic,):
            for used in re.findall(r"\{([^}]*)\}", tmpl):
                if used not in names:
                    raise RouteError(f"route {spec!r}: {{{used}}} is not a segment of the pattern")
        return cls(pattern, topic, key, re.compile("^" + "/".join(rx) + "$"), tuple(names))

    @property
    def mqtt_filter(self) -> str:
        """The subscription filter that covers this pattern: named segments become +."""
        return "/".join("+" if _SEGMENT_RE.fullmatch(s) else s for s in self.pattern.split("/"))


def covering_filters(filters) -> list[str]:
    """Drop filters another one already covers: overlapping subscriptions would make the broker
    deliver a message once per matching subscription."""
    def covers(b: str, a: str) -> bool:
        la, lb = a.split("/"), b.split("/")
        return len(la) == len(lb) and all(y == "+" or x == y for x, y in zip(la, lb))
    fs = sorted(set(filters))
    return [a for a in fs if not any(b != a and covers(b, a) for b in fs)]


@dataclass(frozen=True)
class Target:
    topic: str
    key: bytes | None
    device_id: str | None
    raw: bool = False       # forwarded as-is (size limit only): not a contract record


class Router:
    """First matching route wins. Results are cached per MQTT topic: a fleet has few distinct
    topics (devices x streams) and the regex + format would otherwise run per message."""

    def __init__(self, routes: list[str] | tuple[str, ...] = DEFAULT_ROUTES, cache_size: int = 100_000,
                 raw_topics: list[str] | tuple[str, ...] = DEFAULT_RAW_TOPICS):
        if not routes:
            raise RouteError("at least one route is required")
        self.routes = tuple(Route.parse(r) for r in routes)
        self.raw_topics = frozenset(raw_topics)
        self._cache: dict[str, Target | None] = {}
        self._cache_size = cache_size

    def route(self, mqtt_topic: str) -> Target | None:
        try:
            return self._cache[mqtt_topic]
        except KeyError:
            pass
        target = None
        for r in self.routes:
            m = r.regex.fullmatch(mqtt_topic)
            if m:
                g = m.groupdict()
                topic = r.topic.format(**g)
                target = Target(topic, r.key.format(**g).encode() if r.key else None,
                                g.get("device_id"), topic in self.raw_topics)
                break
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[mqtt_topic] = target
        return target


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


def inspect(payload: bytes, target: Target | None, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
            check_contract: bool = True, check_device: bool = True) -> Rejection | None:
    """None when the message may go to its topic, else why it goes to the dead-letter topic.
    Order matters: the cheapest and most telling check first, spoofing before contract detail."""
    if target is None:
        return Rejection(UNMAPPED, "no route matches the MQTT topic")
    n = len(payload)
    if n > max_bytes:
        return Rejection(TOO_LARGE, f"{n} bytes > limit {max_bytes}")
    if target.raw:
        return None
    try:
        # The lake's definition too (spark_jobs.validation.parse): one place says what is JSON.
        record: Any = jsontext.loads(payload)
    except jsontext.JsonRejected as e:
        return Rejection(e.reason, e.detail[:300])
    if check_device and target.device_id is not None and isinstance(record, dict):
        claimed = record.get("device_id")
        if claimed is not None and claimed != target.device_id:
            return Rejection(SPOOFED, f"payload device_id {str(claimed)[:80]!r} != topic device "
                                      f"{target.device_id!r}")
    if check_contract:
        rt = BY_NAME.get(target.topic)
        if rt is None:
            return Rejection(NO_CONTRACT, f"no contract for topic {target.topic!r}")
        if not checker(rt)(record):
            # Only a failing record pays for the explanation.
            return Rejection(CONTRACT, "; ".join(str(x) for x in violations(rt, record))[:1000])
    return None


class AckWindow:
    """Messages in arrival order; each is acknowledged to MQTT only when it and every message that
    arrived before it are confirmed by Kafka. Thread-safe: the MQTT thread adds, the Kafka
    delivery thread completes and pops.

    An entry is [mid, qos, done]; a plain list keeps the per-message cost at one allocation."""

    __slots__ = ("_q", "_lock")

    def __init__(self):
        self._q: deque[list] = deque()
        self._lock = threading.Lock()

    def add(self, mid: int, qos: int) -> list:
        entry = [mid, qos, False]
        with self._lock:
            self._q.append(entry)
        return entry

    @staticmethod
    def complete(entry: list) -> None:
        entry[2] = True

    def pop_ready(self) -> list[tuple[int, int]]:
        """(mid, qos) of the completed prefix, oldest first, removed from the window."""
        out = []
        with self._lock:
            q = self._q
            while q and q[0][2]:
                e = q.popleft()
                out.append((e[0], e[1]))
        return out

    def reset(self) -> int:
        """Forget every pending entry (a new MQTT connection: their packet ids are void); returns
        how many. Their Kafka confirmations still arrive but complete entries no one reads."""
        with self._lock:
            n = len(self._q)
            self._q = deque()
        return n

    def __len__(self) -> int:
        return len(self._q)


def user_properties_over(ups: list[tuple[str, str]], max_count: int, max_bytes: int) -> str | None:
    """None when the MQTT v5 user properties of a message fit the bounds (count, and bytes of all
    names and values in UTF-8), else why not: they become Kafka headers, and unbounded headers can
    make a record Kafka refuses."""
    n = len(ups)
    if n > max_count:
        why = f"{n} user properties > limit {max_count}"
    else:
        size = sum(len(k.encode()) + len(v.encode()) for k, v in ups)
        if size <= max_bytes:
            return None
        why = f"{size} bytes of user properties > limit {max_bytes}"
    names = ", ".join(k[:40] for k, _ in ups[:5]) + (", ..." if n > 5 else "")
    return f"{why} (names: {names}); dropped"[:500]
