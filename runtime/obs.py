"""Observability for the edge agent and the bridge: metrics, /metrics + /healthz, JSON logs.

Deliberately tiny (no prometheus_client on the Pi): Counter and Gauge with labels, callback
gauges evaluated at scrape time, rendered in the Prometheus text exposition format 0.0.4.
"""
from __future__ import annotations

import json
import logging
import math
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Mapping

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _fmt_value(v: float) -> str:
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _escape_label(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()):
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        self.name, self.help = name, help
        self.labelnames = tuple(labelnames)
        for ln in self.labelnames:
            if not _LABEL_RE.fullmatch(ln) or ln.startswith("__"):
                raise ValueError(f"invalid label name {ln!r} for {name}")
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        if not self.labelnames:
            self._values[()] = 0

    def _key(self, labels: Mapping[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labelnames)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def get(self, **labels) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0)

    def samples(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return sorted(self._values.items())


class Counter(_Metric):
    """Only goes up. Name it ..._total."""
    kind = "counter"

    def inc(self, amount: float = 1, **labels) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: counters only go up (got {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, **labels) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def inc(self, amount: float = 1, **labels) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def dec(self, amount: float = 1, **labels) -> None:
        self.inc(-amount, **labels)


class CallbackGauge(_Metric):
    """Value computed at scrape time: fn() -> number, or {label-values tuple: number}."""
    kind = "gauge"

    def __init__(self, name, help, fn: Callable[[], float | Mapping[tuple, float]], labelnames=(),
                 kind: str = "gauge"):
        super().__init__(name, help, labelnames)
        if not callable(fn):
            raise TypeError(f"{name}: fn must be callable, got {fn!r}")
        self.kind = kind
        self._fn = fn
        self._values.clear()

    def samples(self):
        v = self._fn()
        if isinstance(v, Mapping):
            return sorted((tuple(str(x) for x in k), val) for k, val in v.items())
        return [((), v)]

    def get(self, **labels) -> float:
        return dict(self.samples()).get(self._key(labels), 0)


class Registry:
    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _register(self, m: _Metric) -> _Metric:
        with self._lock:
            old = self._metrics.get(m.name)
            if old is not None:
                # Same definition twice (e.g. a component restarted) returns the existing one.
                if type(old) is type(m) and old.labelnames == m.labelnames and not isinstance(
                        m, CallbackGauge):
                    return old
                raise ValueError(f"metric {m.name} already registered differently")
            self._metrics[m.name] = m
            return m

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        return self._register(Counter(self.prefix + name, help, labelnames))

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
        return self._register(Gauge(self.prefix + name, help, labelnames))

    def gauge_fn(self, name: str, help: str, fn, labelnames: Iterable[str] = ()) -> CallbackGauge:
        return self._register(CallbackGauge(self.prefix + name, help, fn, labelnames))

    def counter_fn(self, name: str, help: str, fn, labelnames: Iterable[str] = ()) -> CallbackGauge:
        """A counter kept elsewhere (e.g. persisted in the queue), read at scrape time."""
        return self._register(CallbackGauge(self.prefix + name, help, fn, labelnames, kind="counter"))

    def get(self, name: str) -> _Metric:
        return self._metrics[self.prefix + name] if self.prefix + name in self._metrics \
            else self._metrics[name]

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            metrics = list(self._metrics.values())
        for m in sorted(metrics, key=lambda m: m.name):
            try:
                samples = m.samples()
            except Exception as e:  # a broken callback must not break the whole scrape
                logging.getLogger(__name__).warning("metric callback failed",
                                                    extra={"metric": m.name, "error": repr(e)})
                continue
            out.append(f"# HELP {m.name} {_escape_help(m.help)}")
            out.append(f"# TYPE {m.name} {m.kind}")
            for key, value in samples:
                if key:
                    labels = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(m.labelnames, key))
                    out.append(f"{m.name}{{{labels}}} {_fmt_value(value)}")
                else:
                    out.append(f"{m.name} {_fmt_value(value)}")
        return "\n".join(out) + "\n"


HealthFn = Callable[[], tuple[bool, dict]]


def serve_http(host: str = "127.0.0.1", port: int = 0, registry: Registry | None = None,
               health: HealthFn | None = None) -> ThreadingHTTPServer:
    """/metrics (Prometheus text) and /healthz (200 or 503 + JSON) in a daemon thread.
    port=0 picks a free port: read server.server_port. Stop with server.shutdown()."""
    registry = registry or Registry()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, registry.render().encode(), CONTENT_TYPE)
            elif path == "/healthz":
                try:
                    ok, detail = health() if health else (True, {})
                except Exception as e:
                    ok, detail = False, {"error": repr(e)}
                body = json.dumps({"healthy": ok, **detail}, default=str, sort_keys=True).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        do_HEAD = do_GET

        def log_message(self, fmt, *args):  # scrapes every few seconds: keep them out of the log
            logging.getLogger(__name__).debug("http " + fmt % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, name=f"obs-http-{server.server_port}",
                         daemon=True)
    t.start()
    return server


# logging ---------------------------------------------------------------------------------------
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                         "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and every `extra=` field."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record):
        base = super().format(record)
        extras = {k: v for k, v in record.__dict__.items()
                  if k not in _STD_ATTRS and not k.startswith("_")}
        return base + (" " + " ".join(f"{k}={v}" for k, v in extras.items()) if extras else "")


def configure_logging(level: str | int = "WARNING", json: bool = True, stream=None) -> None:
    """Root logger to one-line JSON (or key=value text) on stderr. Quiet (WARNING) by default."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._smartcity = True  # replace only our own handler: keep e.g. pytest's capture
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_smartcity", False):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
