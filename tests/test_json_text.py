"""contracts.jsontext, the one definition of a record's JSON text, on the bridge's side: inspect()
gives every payload of the shared corpus (tests/json_corpus.py) its verdict; the lake's side of the
same corpus is tests/test_spark_json_corpus.py."""
from __future__ import annotations

import json

import pytest

from smartcity.bridge.core import DLQ_REASONS, Router, inspect
from smartcity.contracts import jsontext as J
from json_corpus import CASES, GPS_BYTES, nested


def _target(topic: str):
    return Router().route(f"smartcity/v1/car-1/{topic.removesuffix('_data')}")


@pytest.mark.parametrize("name,topic,payload,reason", CASES, ids=[c[0] for c in CASES])
def test_the_bridge_gives_each_corpus_payload_its_verdict(name, topic, payload, reason):
    rej = inspect(payload, _target(topic), max_bytes=10 ** 7)  # too_large is another rule
    assert (rej and rej.reason) == reason, rej
    if reason in J.REASONS:
        assert J.verdict(payload) == reason


def test_every_json_reason_is_a_dlq_reason_and_each_occurs_in_the_corpus():
    assert set(J.REASONS) <= set(DLQ_REASONS)
    assert set(J.REASONS) <= {r for *_, r in CASES}


def test_nesting_within_the_bridge_size_limit_is_too_deep_never_a_recursion_error():
    """~130,000 levels fit in the default 256 KiB; json.loads would raise RecursionError near
    1,000 (the bridge reported that as bridge_error, "a bug to report")."""
    deep = nested(130_000)
    assert len(deep) < 256 * 1024
    rej = inspect(deep, _target("gps_data"))
    assert rej.reason == J.TOO_DEEP and "130000 > limit 64" in rej.detail
    with pytest.raises(RecursionError):
        json.loads(deep)


def test_duplicate_keys_name_the_key_and_nan_is_not_json():
    rej = inspect(GPS_BYTES[:-1] + b',"event_id":"car-1:0000abcd:8"}', _target("gps_data"))
    assert (rej.reason, rej.detail) == (J.DUPLICATE_KEY, "key 'event_id' appears twice in one object")
    rej = inspect(GPS_BYTES.replace(b'"lat":52.37', b'"lat":NaN'), _target("gps_data"))
    assert rej.reason == J.NOT_JSON and "NaN is not JSON" in rej.detail


@pytest.mark.parametrize("text,depth", [
    (b"", 0), (b"1", 0), (b"[]", 1), (b"[[],[[]]]", 3), (b'{"a":[{"b":[]}]}', 4),
    (b'["[[[[", "]]]]"]', 1),                  # brackets in strings do not count
    (b'["\\"[[", "\\\\", [[1]]]', 3),            # escaped quote and escaped backslash
    (b'[["unterminated [[[[', 2),              # an open string runs to the end
    (b"]]]][[", 0), (b"[" * 100, 100),         # unbalanced: the deepest prefix
])
def test_depth_counts_brackets_outside_strings(text, depth):
    assert J.depth(text) == depth


def test_a_valid_record_decodes_as_json_loads_does():
    for _, _, payload, reason in CASES:
        if reason is None or reason == "contract_invalid":
            assert J.loads(payload) == json.loads(payload), payload[:80]


@pytest.mark.parametrize("name,payload", [
    ("unterminated string of escaped quotes", b'"' + b'\\"' * 131_000),   # a backtracking regex: minutes
    ("333-digit numbers", b"[" + b",".join([b"1" * 333] * 780) + b"]"),  # a naive digit-run search: 0.1 s
    ("\\u escapes", b'{"a":"' + b"\\u0041" * 43_000 + b'\\ud800"}'),
    ("[] pairs", b"[" + b"[]," * 87_000 + b"1]"),
    ("one bracket after another", b"[" * 262_000),
    ("many keys", b"{" + b",".join(b'"k%d":1' % i for i in range(19_000)) + b"}"),
])
def test_adversarial_payloads_at_the_size_limit_cost_milliseconds(name, payload):
    """Every check is linear: ~1-25 ms for these 256 KiB payloads (json.loads alone: 0.1-15 ms)."""
    import time
    assert len(payload) <= 256 * 1024
    t = time.perf_counter()
    inspect(payload, _target("gps_data"))
    assert time.perf_counter() - t < 0.5
