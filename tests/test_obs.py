"""Metrics render as Prometheus text; /healthz says 503 when unhealthy; logs are one JSON line."""
from __future__ import annotations

import io
import json
import logging
import re
import urllib.error
import urllib.request

import pytest

from smartcity.runtime.obs import Registry, configure_logging, serve_http

# Text exposition format 0.0.4, line by line.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE_RE = re.compile(rf"^({_NAME})(\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})"
                        rf"(?:,[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})*\}})? "
                        r"(-?[0-9.eE+-]+|NaN|[+-]Inf)$")
_META_RE = re.compile(rf"^# (HELP {_NAME} .*|TYPE {_NAME} (counter|gauge|untyped|summary|histogram))$")


def parse_exposition(text: str) -> dict[str, dict]:
    """Strictly validate and return {metric: {"type": ..., "samples": {labels_str: value}}}."""
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
        assert m.group(1) == typed, "samples follow their own TYPE line"
        out[typed]["samples"][m.group(2) or ""] = float(m.group(3))
    return out


def test_counters_gauges_and_labels_render_as_valid_exposition_text():
    reg = Registry()
    c = reg.counter("smartcity_readings_total", "Readings\nby stream", ["stream"])
    g = reg.gauge("smartcity_queue_depth", "Rows waiting")
    c.inc(stream="gps")
    c.inc(2, stream='we"ird\\name\n')
    g.set(42)
    g.dec(2)
    parsed = parse_exposition(reg.render())
    assert parsed["smartcity_readings_total"]["type"] == "counter"
    assert parsed["smartcity_readings_total"]["samples"] == {
        '{stream="gps"}': 1.0, '{stream="we\\"ird\\\\name\\n"}': 2.0}
    assert parsed["smartcity_queue_depth"] == {"type": "gauge", "samples": {"": 40.0}}
    assert "# HELP smartcity_readings_total Readings\\nby stream" in reg.render()


def test_callback_gauges_are_evaluated_at_scrape_time():
    depth = [3]
    reg = Registry()
    reg.gauge_fn("smartcity_queue_depth", "Rows waiting", lambda: depth[0])
    reg.gauge_fn("smartcity_sensor_up", "Sensor alive", lambda: {("gps",): 1, ("obd",): 0}, ["sensor"])
    reg.counter_fn("smartcity_queue_dropped_total", "Dropped", lambda: depth[0] * 10)
    assert parse_exposition(reg.render())["smartcity_queue_depth"]["samples"] == {"": 3}
    depth[0] = 7
    parsed = parse_exposition(reg.render())
    assert parsed["smartcity_queue_depth"]["samples"] == {"": 7}
    assert parsed["smartcity_sensor_up"]["samples"] == {'{sensor="gps"}': 1, '{sensor="obd"}': 0}
    assert parsed["smartcity_queue_dropped_total"] == {"type": "counter", "samples": {"": 70}}
    with pytest.raises(TypeError, match="callable"):
        reg.gauge_fn("smartcity_not_callable", "x", 5)   # e.g. passing q.depth() instead of q.depth


def test_a_failing_callback_is_skipped_not_fatal_to_the_scrape():
    reg = Registry()
    reg.gauge_fn("smartcity_broken", "x", lambda: 1 / 0)
    reg.gauge("smartcity_ok", "y").set(1)
    assert list(parse_exposition(reg.render())) == ["smartcity_ok"]


def test_metric_misuse_is_a_clear_error():
    reg = Registry()
    c = reg.counter("smartcity_x_total", "x", ["stream"])
    with pytest.raises(ValueError, match="labels"):
        c.inc(device="a")
    with pytest.raises(ValueError, match="only go up"):
        c.inc(-1, stream="gps")
    with pytest.raises(ValueError, match="invalid metric name"):
        reg.gauge("bad-name", "x")
    with pytest.raises(ValueError, match="already registered"):
        reg.gauge("smartcity_x_total", "x")
    assert reg.counter("smartcity_x_total", "x", ["stream"]) is c  # same definition: same object


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_http_serves_metrics_and_healthz_503_when_unhealthy():
    reg = Registry()
    reg.counter("smartcity_up_total", "x").inc()
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
    server = serve_http("127.0.0.1", 0, Registry(), lambda: 1 / 0)
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
