"""The end-to-end acknowledgement format shared by the bridge (encodes) and the agent (decodes)."""
from __future__ import annotations

import pytest

from smartcity.contracts import encode
from smartcity.contracts.acks import (AckRanges, ack_topic, decode_acks, encode_acks, find_event_id,
                            split_event_id, to_ranges)
from smartcity.contracts.schema import example


def test_seqs_are_merged_into_sorted_inclusive_ranges():
    assert to_ranges([5, 1, 2, 3, 7, 3]) == [[1, 3], [5, 5], [7, 7]]
    assert to_ranges([]) == []


def test_acks_round_trip_per_boot():
    payload = encode_acks({"b1": [1, 2, 3, 9], "b2": [4]})
    assert payload == b'{"v":1,"acks":{"b1":[[1,3],[9,9]],"b2":[[4,4]]}}'
    assert decode_acks(payload) == {"b1": [(1, 3), (9, 9)], "b2": [(4, 4)]}


@pytest.mark.parametrize("bad", [b"nope", b"[]", b'{"v":2,"acks":{}}', b'{"v":1}',
                                 b'{"v":1,"acks":{"b":[[2,1]]}}', b'{"v":1,"acks":{"b":[[1]]}}',
                                 b'{"v":1,"acks":{"b":[[1,2.5]]}}', b'{"v":1,"acks":{"b":[[-1,2]]}}',
                                 b'{"v":1,"acks":{"b":[[true,2]]}}', b'{"v":1,"acks":{"b":5}}'])
def test_malformed_acks_are_refused_with_a_reason(bad):
    with pytest.raises(ValueError):
        decode_acks(bad)


def test_the_event_id_is_found_in_a_records_bytes_without_parsing_it():
    rec = example("gps_data")
    rec["event_id"], rec["device_id"], rec["seq"] = "bus-7:0a1b2c3d:42", "bus-7", 42
    assert find_event_id(encode("gps_data", rec)) == ("bus-7", "0a1b2c3d", 42)
    assert find_event_id(b'{"event_id" : "bus:7:b:9", "x":1}') == ("bus:7", "b", 9)
    assert find_event_id(b'{"note":"\\"event_id\\":\\"x:y:1\\""}') is None   # inside a string
    assert find_event_id(b'{"event_id":"no-seq"}') is None
    assert find_event_id(b"\xff\xfe garbage") is None
    with pytest.raises(ValueError):
        split_event_id("a:b:c")


def test_collected_acks_drain_once_per_device():
    acks = AckRanges()
    for dev, boot, seq in [("d1", "b", 1), ("d1", "b", 2), ("d2", "c", 7), ("d1", "b", 4)]:
        acks.add(dev, boot, seq)
    assert len(acks) == 4
    out = dict(acks.drain())
    assert out == {ack_topic("d1"): b'{"v":1,"acks":{"b":[[1,2],[4,4]]}}',
                   ack_topic("d2"): b'{"v":1,"acks":{"c":[[7,7]]}}'}
    assert len(acks) == 0 and acks.drain() == []
    assert ack_topic("d1") == "smartcity/ack/v1/d1"
