"""LogLimiter: an error that repeats per reading writes one line per interval, not one per reading."""
from __future__ import annotations

import logging

from smartcity.runtime.ratelimit import LogLimiter

log = logging.getLogger("test.ratelimit")


def lines(caplog):
    return [r for r in caplog.records if r.name == log.name]


def test_the_first_line_goes_out_and_repeats_within_the_interval_are_held_back(caplog):
    clock = [100.0]
    limiter = LogLimiter(log, every_s=60, monotonic=lambda: clock[0])
    with caplog.at_level(logging.ERROR, logger=log.name):
        assert limiter.error("broker rejected reading", key="Not authorized", extra={"seq": 1})
        for seq in range(2, 1001):
            clock[0] += 0.05
            assert not limiter.error("broker rejected reading", key="Not authorized",
                                     extra={"seq": seq})
    [line] = lines(caplog)
    assert line.seq == 1 and line.levelname == "ERROR" and line.repeat_log_every_s == 60
    assert not hasattr(line, "suppressed")
    assert limiter.suppressed("broker rejected reading", "Not authorized") == 999


def test_after_the_interval_one_line_says_how_many_repeats_were_suppressed(caplog):
    clock = [0.0]
    limiter = LogLimiter(log, every_s=10, monotonic=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(25):          # 25 s at one a second: lines at t=0, 10, 20
            limiter.warning("queue full")
            clock[0] += 1
    got = lines(caplog)
    assert len(got) == 3
    assert [getattr(r, "suppressed", 0) for r in got] == [0, 9, 9]


def test_distinct_errors_are_limited_separately(caplog):
    limiter = LogLimiter(log, every_s=60, monotonic=lambda: 0.0)
    with caplog.at_level(logging.ERROR, logger=log.name):
        for _ in range(5):
            limiter.error("broker rejected reading", key="Not authorized")
            limiter.error("broker rejected reading", key="Quota exceeded")
            limiter.error("disk full")
    assert sorted((r.getMessage(), getattr(r, "suppressed", 0)) for r in lines(caplog)) == [
        ("broker rejected reading", 0), ("broker rejected reading", 0), ("disk full", 0)]


def test_memory_is_bounded_when_keys_keep_changing():
    limiter = LogLimiter(logging.getLogger("test.ratelimit.quiet"), every_s=60, max_keys=8,
                         monotonic=lambda: 0.0)
    for i in range(1000):
        limiter.error("odd", key=i)
    assert len(limiter._state) == 8


def test_a_broker_refusing_every_reading_writes_one_error_line_not_one_per_reading(tmp_path, caplog):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from smartcity.edge.publisher import MqttPublisher, MqttSettings
    from smartcity.edge.queue import DurableQueue
    from smartcity.runtime.obs import value

    with DurableQueue(tmp_path / "q.db") as q:
        q.append_many([("gps", lambda seq: ("smartcity/v1/bus-1/gps", b"{}"))] * 200)
        pub = MqttPublisher(q, MqttSettings(device_id="bus-1"))    # not started: no broker needed
        denied = ReasonCode(PacketTypes.PUBACK, identifier=0x87)
        for mid, row in enumerate(q.peek(200), 1):
            pub._inflight[mid] = (row, None)   # as _pump records it: no end-to-end key
            pub._on_publish(None, None, mid, denied, None)
        assert q.rejected_total() == 200 and q.depth() == 0
        assert value(pub.m_rejected, reason="Not authorized") == 200, "the metric counts every one"
    errors = [r for r in caplog.records if "broker rejected reading" in r.message]
    assert len(errors) == 1 and errors[0].seq == 1
