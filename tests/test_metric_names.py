"""The names and types each service exposes on /metrics: dashboards and alerts use these names, so a
rename or a change of type is a deliberate change to these lists (and a note in the commit), never
a side effect. A new metric needs no entry.

Types changed once, names did not, when the hand-written registry gave way to prometheus_client:
bridge_received_total, bridge_forwarded_total and smartcity_edge_{records,records_invalid,
sensor_errors}_total were exported as gauges and are counters; bridge_kafka_delivery_seconds_{sum,
count} were two gauges and are the summary bridge_kafka_delivery_seconds (same sample names)."""
from __future__ import annotations

import re

from prometheus_client import generate_latest

BRIDGE = {
    "bridge_acked_total": "counter",
    "bridge_device_ack_messages_total": "counter",
    "bridge_device_acked_readings_total": "counter",
    "bridge_dlq_total": "counter",
    "bridge_forwarded_total": "counter",
    "bridge_group_member_offline": "gauge",
    "bridge_inflight": "gauge",
    "bridge_kafka_delivery_seconds": "summary",   # samples: ..._count, ..._sum
    "bridge_kafka_delivery_seconds_p50": "gauge",
    "bridge_kafka_delivery_seconds_p99": "gauge",
    "bridge_kafka_errors_total": "counter",
    "bridge_kafka_up": "gauge",
    "bridge_mqtt_connected": "gauge",
    "bridge_mqtt_fast_path": "gauge",        # 0: paho's own receive path (bridge/mqtt_client.py)
    "bridge_mqtt_session_present": "gauge",
    "bridge_mqtt_session_taken_over_total": "counter",
    "bridge_mqtt_subscribed": "gauge",
    "bridge_produce_retries_total": "counter",
    "bridge_produce_waiting": "gauge",
    "bridge_received_total": "counter",
    "bridge_reconnects_total": "counter",
    "bridge_seconds_since_last_message": "gauge",
}

EDGE = {
    "smartcity_edge_disk_free_bytes": "gauge",
    "smartcity_edge_disk_low": "gauge",
    "smartcity_edge_last_fix_age_seconds": "gauge",
    "smartcity_edge_published_per_second": "gauge",
    "smartcity_edge_queue_depth": "gauge",
    "smartcity_edge_queue_dropped_total": "counter",
    "smartcity_edge_queue_oldest_age_seconds": "gauge",
    "smartcity_edge_queue_refused_total": "counter",
    "smartcity_edge_queue_rejected": "gauge",
    "smartcity_edge_queue_rejected_dropped_total": "counter",
    "smartcity_edge_records_invalid_total": "counter",
    "smartcity_edge_records_total": "counter",
    "smartcity_edge_sensor_errors_total": "counter",
    "smartcity_mqtt_bad_acks_total": "counter",
    "smartcity_mqtt_connect_failures_total": "counter",
    "smartcity_mqtt_connected": "gauge",
    "smartcity_mqtt_inflight": "gauge",
    "smartcity_mqtt_not_delivered_total": "counter",
    "smartcity_mqtt_publish_acks_total": "counter",
    "smartcity_mqtt_publish_rejected_total": "counter",
    "smartcity_mqtt_published_total": "counter",
    "smartcity_mqtt_reconnects_total": "counter",
    "smartcity_mqtt_resends_total": "counter",
    "smartcity_mqtt_unconfirmed": "gauge",
}


def exposed(registry) -> tuple[dict[str, str], set[str]]:
    """({TYPE name: type}, {sample names}) of a registry's /metrics text."""
    text = generate_latest(registry).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    return types, samples


def test_the_bridge_exposes_the_names_dashboards_use():
    from smartcity.bridge.config import BridgeSettings
    from smartcity.bridge.service import Bridge
    b = Bridge(BridgeSettings(bridge_id="unit", http_port=-1))
    b.n_received, b.lat_count, b.lat_sum_s = 5, 4, 0.5
    types, samples = exposed(b.registry)
    assert {n: types.get(n) for n in BRIDGE} == BRIDGE
    assert {"bridge_received_total", "bridge_kafka_delivery_seconds_count",
            "bridge_kafka_delivery_seconds_sum", "bridge_dlq_total"} <= samples
    assert not any(s.endswith("_created") for s in samples)
    assert b.registry.get_sample_value("bridge_received_total") == 5
    assert b.registry.get_sample_value("bridge_kafka_delivery_seconds_count") == 4


def test_the_agent_exposes_the_names_dashboards_use(tmp_path):
    from smartcity.edge.agent import Agent, AgentSettings
    agent = Agent(AgentSettings(device_id="bus-1", data_dir=tmp_path))   # not started: no broker
    try:
        types, samples = exposed(agent.metrics)
    finally:
        agent.queue.close()
    assert {n: types.get(n) for n in EDGE} == EDGE
    assert {"smartcity_edge_records_total", "smartcity_mqtt_publish_acks_total",
            "smartcity_edge_queue_depth"} <= samples
