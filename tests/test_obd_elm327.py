"""ELM327 framing and reply parsing, on literal byte streams and reply strings."""
from __future__ import annotations

import pytest

from smartcity.edge.obd import elm327 as e
from smartcity.edge.obd.elm327 import parse_reply, split_prompts


def test_stream_is_cut_at_each_prompt_and_the_rest_is_kept():
    replies, rest = split_prompts(b"41 0D 58\r\r>41 0C 1A F8\r\r>41 05")
    assert replies == ["41 0D 58\r\r", "41 0C 1A F8\r\r"]
    assert rest == b"41 05"


def test_nul_bytes_are_dropped_from_the_stream():
    replies, rest = split_prompts(b"\x00ELM327 v1.5\r\r>")
    assert replies == ["ELM327 v1.5\r\r"] and rest == b""


def test_echoed_command_is_not_data():
    assert parse_reply("010D\r41 0D 58\r\r", "010D") == [bytes.fromhex("410D58")]


def test_linefeeds_and_blank_lines_are_ignored():
    assert parse_reply("\r\n41 0D 58\r\n\r\n") == [bytes.fromhex("410D58")]


def test_searching_precedes_the_data():
    assert parse_reply("SEARCHING...\r41 00 BE 1F A8 13\r\r") == [bytes.fromhex("4100BE1FA813")]


def test_bus_init_ok_precedes_the_data():
    assert parse_reply("BUS INIT: ...OK\r41 0D 58\r") == [bytes.fromhex("410D58")]
    assert parse_reply("BUS INIT...\r41 0D 58\r") == [bytes.fromhex("410D58")]


@pytest.mark.parametrize("reply, cls, kind", [
    ("NO DATA\r\r", e.NoData, "no_data"),
    ("NODATA\r", e.NoData, "no_data"),
    ("STOPPED\r", e.Stopped, "stopped"),
    ("?\r", e.UnknownCommand, "unknown_command"),
    ("SEARCHING...\rUNABLE TO CONNECT\r", e.UnableToConnect, "unable_to_connect"),
    ("CAN ERROR\r", e.CanError, "can_error"),
    ("BUS INIT: ...ERROR\r", e.BusInitError, "bus_init"),
    ("BUS INIT: ERROR\r", e.BusInitError, "bus_init"),
    ("BUFFER FULL\r", e.BufferFull, "buffer_full"),
    ("BUS BUSY\r", e.BusError, "bus_error"),
    ("FB ERROR\r", e.BusError, "bus_error"),
    ("41 0D 58 <DATA ERROR\r", e.DataError, "data_error"),
    ("<RX ERROR\r", e.DataError, "data_error"),
    ("LV RESET\r", e.AdapterReset, "adapter_reset"),
    ("ERR94\r", e.AdapterReset, "adapter_reset"),
    ("", e.EmptyReply, "empty"),
    ("\r\r", e.EmptyReply, "empty"),
    ("SEARCHING...\r", e.EmptyReply, "empty"),
    ("41 0D ZZ\r", e.Garbled, "garbled"),
])
def test_error_replies_raise_their_typed_error(reply, cls, kind):
    with pytest.raises(cls) as info:
        parse_reply(reply)
    assert info.value.kind == kind
    assert info.value.reply == reply
    assert str(info.value)  # a message a human can read


def test_error_reply_after_echo_is_still_recognised():
    with pytest.raises(e.CanError):
        parse_reply("010C\rCAN ERROR\r\r", "010C")


def test_multiframe_frames_must_come_in_order():
    with pytest.raises(e.Garbled, match="frame 2 where 1 was due"):
        parse_reply("014\r0: 49 02 01 31 44 34\r2: 42 31 32 33 34 35 36")


def test_multiframe_missing_bytes_is_garbled_not_short():
    with pytest.raises(e.Garbled, match="13 of 20 bytes"):
        parse_reply("014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35")


def test_multiframe_index_wraps_after_f():
    payload = bytes(range(0x10, 0x10 + 6 + 7 * 16))
    lines = [f"{len(payload):03X}", "0: " + payload[:6].hex(" ")]
    for i, off in enumerate(range(6, len(payload), 7), start=1):
        lines.append(f"{i % 16:X}: " + payload[off:off + 7].hex(" "))
    assert parse_reply("\r".join(lines)) == [payload]


def test_single_and_multi_frame_messages_of_one_reply_are_kept_apart():
    reply = "41 0D 58\r014\r0:490201314434\r1:47503030523535\r2:42313233343536"
    msgs = parse_reply(reply)
    assert msgs[0] == bytes.fromhex("410D58") and len(msgs[1]) == 20
