"""Metrics render as Prometheus text (prometheus_client, our callbacks); /healthz says 503 when
unhealthy; logs are one JSON line."""
from __future__ import annotations

import io
import json
import logging
import re
import sys
import urllib.error
import urllib.request

import pytest

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from smartcity.runtime.obs import configure_logging, counter_fn, gauge_fn, serve_http, summary_fn, value

# Text exposition format 0.0.4, line by line.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE_RE = re.compile(rf"^({_NAME})(\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})"
                        rf"(?:,[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})*\}})? "
                        r"(-?[0-9.eE+-]+|NaN|[+-]Inf)$")
_META_RE = re.compile(rf"^# (HELP {_NAME} .*|TYPE {_NAME} (counter|gauge|untyped|summary|histogram))$")
_SUFFIXES = {"summary": ("_count", "_sum")}


def parse_exposition(text: str) -> dict[str, dict]:
    """Strictly validate and return {metric: {"type": ..., "samples": {name+labels: value}}}
    (a sample's key is its labels, or for a summary its suffix and labels)."""
    assert text.endswith("\n")
    out: dict[str, dict] = {}
    typed: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            assert _META_RE.match(line), f"bad meta line: {line!r}"
            parts = line.split(" ", 3)
            if parts[1] == "TYPE":
                assert parts[2] not in out, f"TYPE after samples for {parts[2]}"
                typed = parts[2]
                out[typed] = {"type": parts[3], "samples": {}}
            continue
        m = _SAMPLE_RE.match(line)
        assert m, f"bad sample line: {line!r}"
        suffix = m.group(1)[len(typed):]
        assert m.group(1).startswith(typed) and suffix in ("",) + _SUFFIXES.get(
            out[typed]["type"], ()), f"sample {m.group(1)} does not belong to {typed}"
        out[typed]["samples"][suffix + (m.group(2) or "")] = float(m.group(3))
    return out


def render(reg: CollectorRegistry) -> str:
    return generate_latest(reg).decode()


def test_counters_gauges_and_labels_render_as_valid_exposition_text():
    reg = CollectorRegistry()
    c = Counter("smartcity_readings_total", "Readings\nby stream", ["stream"], registry=reg)
    g = Gauge("smartcity_queue_depth", "Rows waiting", registry=reg)
    c.labels(stream="gps").inc()
    c.labels(stream='we"ird\\name\n').inc(2)
    g.set(42)
    g.dec(2)
    parsed = parse_exposition(render(reg))
    # The name as given, _total included, is the name exposed; and no `_created` series.
    assert parsed == {
        "smartcity_readings_total": {"type": "counter", "samples": {
            '{stream="gps"}': 1.0, '{stream="we\\"ird\\\\name\\n"}': 2.0}},
        "smartcity_queue_depth": {"type": "gauge", "samples": {"": 40.0}}}
    assert "# HELP smartcity_readings_total Readings\\nby stream" in render(reg)


def test_callback_metrics_are_evaluated_at_scrape_time():
    depth = [3]
    reg = CollectorRegistry()
    gauge_fn(reg, "smartcity_queue_depth", "Rows waiting", lambda: depth[0])
    gauge_fn(reg, "smartcity_sensor_up", "Sensor alive", lambda: {("gps",): 1, ("obd",): 0}, ["sensor"])
    counter_fn(reg, "smartcity_queue_dropped_total", "Dropped", lambda: depth[0] * 10)
    counter_fn(reg, "smartcity_forwarded_total", "By topic", lambda: {("gps_data",): depth[0]}, ["topic"])
    summary_fn(reg, "smartcity_delivery_seconds", "Delivery times", lambda: (depth[0], depth[0] / 4))
    assert parse_exposition(render(reg))["smartcity_queue_depth"]["samples"] == {"": 3}
    depth[0] = 7
    parsed = parse_exposition(render(reg))
    assert parsed["smartcity_queue_depth"]["samples"] == {"": 7}
    assert parsed["smartcity_sensor_up"]["samples"] == {'{sensor="gps"}': 1, '{sensor="obd"}': 0}
    assert parsed["smartcity_queue_dropped_total"] == {"type": "counter", "samples": {"": 70}}
    assert parsed["smartcity_forwarded_total"] == {"type": "counter", "samples": {'{topic="gps_data"}': 7}}
    assert parsed["smartcity_delivery_seconds"] == {"type": "summary",
                                                   "samples": {"_count": 7, "_sum": 1.75}}
    with pytest.raises(TypeError, match="callable"):
        gauge_fn(reg, "smartcity_not_callable", "x", 5)   # e.g. passing q.depth() instead of q.depth


def test_a_failing_callback_is_skipped_not_fatal_to_the_scrape():
    reg = CollectorRegistry()
    gauge_fn(reg, "smartcity_broken", "x", lambda: 1 / 0)
    Gauge("smartcity_ok", "y", registry=reg).set(1)
    assert list(parse_exposition(render(reg))) == ["smartcity_ok"]


def test_metric_misuse_is_a_clear_error():
    reg = CollectorRegistry()
    c = Counter("smartcity_x_total", "x", ["stream"], registry=reg)
    with pytest.raises(ValueError, match="label"):
        c.labels(device="a")
    with pytest.raises(ValueError, match="non-negative"):
        c.labels(stream="gps").inc(-1)
    with pytest.raises(ValueError, match="Duplicated"):
        Gauge("smartcity_x_total", "x", registry=reg)
    with pytest.raises(ValueError, match="Duplicated"):   # a callback and a metric alike
        counter_fn(reg, "smartcity_x_total", "x", lambda: 1)


def test_one_series_reads_by_object_or_by_exposed_name():
    """value() for code and tests holding the metric; get_sample_value for a name on /metrics."""
    reg = CollectorRegistry()
    acks = Counter("smartcity_acks_total", "x", registry=reg)
    resends = Counter("smartcity_resends_total", "x", ["reason"], registry=reg)
    n = {"gps": 4}
    fwd = counter_fn(reg, "smartcity_forwarded_total", "x", lambda: {(k,): v for k, v in n.items()},
                     ["stream"])
    acks.inc(3)
    assert value(acks) == 3 and value(fwd, stream="gps") == 4
    assert value(resends, reason="ack_timeout") == 0, "0 until the series exists"
    resends.labels(reason="ack_timeout").inc()
    assert value(resends, reason="ack_timeout") == 1
    assert reg.get_sample_value("smartcity_acks_total") == 3
    assert reg.get_sample_value("smartcity_forwarded_total", {"stream": "gps"}) == 4
    assert reg.get_sample_value("smartcity_nope") is None


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_http_serves_metrics_and_healthz_503_when_unhealthy():
    reg = CollectorRegistry()
    Counter("smartcity_up_total", "x", registry=reg).inc()
    state = {"ok": True}
    server = serve_http("127.0.0.1", 0, reg, lambda: (state["ok"], {"mqtt_connected": state["ok"]}))
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        code, ctype, body = get(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert parse_exposition(body)["smartcity_up_total"]["samples"] == {"": 1}
        code, ctype, body = get(base + "/healthz")
        assert (code, ctype) == (200, "application/json")
        assert json.loads(body) == {"healthy": True, "mqtt_connected": True}
        state["ok"] = False
        code, _, body = get(base + "/healthz")
        assert code == 503 and json.loads(body)["mqtt_connected"] is False
        assert get(base + "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_health_check_that_raises_reports_503():
    server = serve_http("127.0.0.1", 0, CollectorRegistry(), lambda: 1 / 0)
    try:
        code, _, body = get(f"http://127.0.0.1:{server.server_port}/healthz")
        assert code == 503 and "ZeroDivisionError" in json.loads(body)["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_json_logs_are_one_line_with_extra_fields():
    buf = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", json=True, stream=buf)
        logging.getLogger("edge.test").info("queue bound\nexceeded", extra={"dropped": 3})
        logging.getLogger("edge.test").debug("not shown at INFO")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["msg"] == "queue bound\nexceeded" and doc["dropped"] == 3
    assert doc["level"] == "info" and doc["logger"] == "edge.test"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", doc["ts"])


def test_logs_go_to_the_stderr_of_the_moment_not_the_one_at_configuration(monkeypatch):
    """A CLI configures logging on stderr; if sys.stderr is replaced afterwards (and the old one
    closed, as pytest does with each test's capture) the next line goes to the new stderr, with
    no "I/O operation on closed file" logging error."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    first, second = io.StringIO(), io.StringIO()
    errors = []
    monkeypatch.setattr(logging, "raiseExceptions", True)
    try:
        monkeypatch.setattr(sys, "stderr", first)
        configure_logging("WARNING", json=True)
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        handler = next(h for h in root.handlers if getattr(h, "_smartcity", False))
        monkeypatch.setattr(handler, "handleError", lambda record: errors.append(record))
        logging.getLogger("edge.test").warning("port lost")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert errors == []
    assert json.loads(second.getvalue())["msg"] == "port lost"
