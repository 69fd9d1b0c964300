"""Observability for the edge agent and the bridge: metrics, /metrics + /healthz, JSON logs.

Metrics are prometheus_client's (pure Python, no dependencies: fine on a Pi), each service with its
own `CollectorRegistry` (never the process-wide default, so a test can build several services):
- what code updates as it goes: `prometheus_client.Counter` / `Gauge(..., registry=registry)`;
- what lives elsewhere and is read at scrape time (plain ints a hot path increments, the queue's
  persisted counts, a quantile): `counter_fn` / `gauge_fn` / `summary_fn`, one custom collector each.
Names are given as exposed: prometheus_client strips a counter's `_total` and puts it back in the
exposition. `value()` reads one series (logs, rates, tests); a registry's `get_sample_value(name,
labels)` reads any sample by its exposed name. `/metrics` is prometheus_client's text format 0.0.4
(`generate_latest`); `/healthz` is ours.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from prometheus_client.metrics_core import (CounterMetricFamily, GaugeMetricFamily, Metric,
                                            SummaryMetricFamily)
from prometheus_client.registry import Collector

from .cli import UsageError

# prometheus_client gives every Counter a `<name>_created` series (its creation time): nothing here
# reads it, and it would double the series a Pi exports. A process-wide switch, as the library has it.
disable_created_metrics()

_FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "summary": SummaryMetricFamily}


class Callback(Collector):
    """One metric whose value lives elsewhere, read when scraped: fn() -> number, or
    {label-values tuple: number} with labelnames; for a summary, fn() -> (count, sum).
    The writer pays nothing (e.g. `self.n += 1` on a hot path); a scrape calls fn once.
    A callback that raises is logged and left out of that scrape, never fails the scrape."""

    def __init__(self, kind: str, name: str, help: str, fn: Callable[[], object],
                 labelnames: Iterable[str] = ()):
        if not callable(fn):
            raise TypeError(f"{name}: fn must be callable, got {fn!r}")
        self.kind, self.name, self.help, self.fn = kind, name, help, fn
        self.labelnames = tuple(labelnames)
        if kind == "summary" and self.labelnames:
            raise ValueError(f"{name}: a callback summary has no labels")
        self.describe()  # an unknown kind fails here, not at the first scrape

    def _family(self) -> Metric:
        return _FAMILIES[self.kind](self.name, self.help, labels=self.labelnames)

    def describe(self) -> list[Metric]:
        """What the registry checks a new metric's names against (no duplicate series)."""
        return [self._family()]

    def collect(self) -> list[Metric]:
        try:
            v = self.fn()
            fam = self._family()
            if self.kind == "summary":
                count, total = v
                fam.add_metric([], count_value=count, sum_value=total)
            elif isinstance(v, Mapping):
                for key, val in sorted(v.items()):
                    fam.add_metric([str(x) for x in key], val)
            else:
                fam.add_metric([], v)
        except Exception as e:  # a broken callback must not break the whole scrape
            logging.getLogger(__name__).warning("metric callback failed",
                                                extra={"metric": self.name, "error": repr(e)})
            return []
        return [fam]


def counter_fn(registry: CollectorRegistry, name: str, help: str, fn,
               labelnames: Iterable[str] = ()) -> Callback:
    """A counter kept elsewhere (a plain int, the queue's persisted count), read at scrape time."""
    c = Callback("counter", name, help, fn, labelnames)
    registry.register(c)
    return c


def gauge_fn(registry: CollectorRegistry, name: str, help: str, fn,
             labelnames: Iterable[str] = ()) -> Callback:
    """A gauge computed at scrape time (a queue depth, an age, a state)."""
    c = Callback("gauge", name, help, fn, labelnames)
    registry.register(c)
    return c


def summary_fn(registry: CollectorRegistry, name: str, help: str, fn) -> Callback:
    """A summary without quantiles kept elsewhere: fn() -> (count, sum), exposed as
    `<name>_count` and `<name>_sum`."""
    c = Callback("summary", name, help, fn)
    registry.register(c)
    return c


def value(metric: Collector, **labels) -> float:
    """The current value of one series of a Counter, Gauge or callback counter/gauge (0 while the
    series does not exist yet): for logs, rates and tests. Reads through collect()."""
    want = {k: str(v) for k, v in labels.items()}
    for family in metric.collect():
        exposed = family.name + "_total" if family.type == "counter" else family.name
        for s in family.samples:
            if s.name == exposed and s.labels == want:
                return s.value
    return 0.0


HealthFn = Callable[[], tuple[bool, dict]]


def serve_http(host: str = "127.0.0.1", port: int = 0, registry: CollectorRegistry | None = None,
               health: HealthFn | None = None) -> ThreadingHTTPServer:
    """/metrics (Prometheus text) and /healthz (200 or 503 + JSON) in a daemon thread.
    port=0 picks a free port: read server.server_port. Stop with server.shutdown()."""
    registry = registry if registry is not None else CollectorRegistry()

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
                self._send(200, generate_latest(registry), CONTENT_TYPE)
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

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:  # in use, or not an address of this host: the operator picks another
        raise UsageError(f"cannot serve /metrics and /healthz on {host}:{port}: {e.strerror}"
                         " (choose another HTTP port)") from None
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


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever sys.stderr is when a record is written, not the object it was
    when logging was configured: a process that replaces sys.stderr later (a test harness
    capturing output, a daemon redirecting it) would otherwise write to a closed stream and get
    logging's "I/O operation on closed file" error instead of its log line."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:   # StreamHandler.__init__ assigns it; sys.stderr rules
        pass


def configure_logging(level: str | int = "WARNING", json: bool = True, stream=None) -> None:
    """Root logger to one-line JSON (or key=value text) on stderr (or `stream`). Quiet (WARNING)
    by default."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if json else TextFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._smartcity = True  # replace only our own handler: keep e.g. pytest's capture
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_smartcity", False):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
