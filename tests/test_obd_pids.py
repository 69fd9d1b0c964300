"""Decoders of the OBD-II command table, on literal ELM327 replies (headers off)."""
from __future__ import annotations

import pytest

from smartcity.edge.obd import pids
from smartcity.edge.obd.elm327 import parse_reply
from smartcity.edge.obd.pids import DecodeError, MODE01

VIN = "1D4GP00R55B123456"


def value(pid: int, reply: str) -> float:
    return pids.decode(MODE01[pid], parse_reply(reply))


def test_each_field_decodes_with_the_j1979_formula():
    assert value(0x0C, "41 0C 1A F8") == 1726.0           # (256*0x1A + 0xF8) / 4
    assert value(0x0D, "41 0D 58") == 88.0
    assert value(0x05, "41 05 7B") == 83.0                # 0x7B - 40
    assert value(0x05, "41 05 00") == -40.0
    assert value(0x04, "41 04 FF") == 100.0
    assert value(0x11, "41 11 33") == 20.0                # 0x33 * 100 / 255
    assert value(0x2F, "41 2F 80") == 50.2
    assert value(0x42, "41 42 37 14") == 14.1             # 0x3714 mV


def test_field_names_are_the_vehicle_data_contract_names():
    from smartcity.contracts.schema import VEHICLE

    names = {p.field for p in MODE01.values()} | {"vin"}
    assert names == set(pids.FIELDS)
    assert names <= set(VEHICLE.field_names)


def test_spaces_off_replies_decode_the_same():
    assert value(0x0C, "410C1AF8") == 1726.0


def test_reply_for_another_pid_is_a_decode_error():
    with pytest.raises(DecodeError, match="no message starts with 41 0D"):
        value(0x0D, "41 0C 1A F8")


def test_short_reply_is_a_decode_error():
    with pytest.raises(DecodeError, match="need 2"):
        value(0x0C, "41 0C 1A")


def test_first_of_several_ecus_wins():
    assert value(0x0D, "41 0D 58\r41 0D 57") == 88.0


def test_bitmap_lists_supported_pids_and_the_chain_bit():
    sup = pids.supported_pids(0x00, parse_reply("41 00 BE 1F A8 13"))
    assert {0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x0D, 0x11, 0x20} <= sup
    assert 0x02 not in sup and 0x0A not in sup
    assert pids.supported_pids(0x40, parse_reply("41 40 40 00 00 00")) == {0x42}


def test_bitmaps_of_several_ecus_are_ored():
    sup = pids.supported_pids(0x00, parse_reply("41 00 80 00 00 00\r41 00 00 00 00 01"))
    assert sup == {0x01, 0x20}


def test_can_multiframe_vin_is_all_17_characters():
    reply = "014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35\r2: 42 31 32 33 34 35 36"
    assert pids.decode_vin(parse_reply(reply)) == VIN


def test_can_multiframe_vin_with_spaces_off():
    reply = "014\r0:490201314434\r1:47503030523535\r2:42313233343536"
    assert pids.decode_vin(parse_reply(reply)) == VIN


def test_can_vin_padding_after_the_length_is_cut():
    # ISO-TP pads the last frame to 8 bytes; the 014 length says where the VIN ends
    reply = "014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35\r2: 42 31 32 33 34 35 36 00"
    assert pids.decode_vin(parse_reply(reply)) == VIN


def test_can_vin_with_leading_filler_bytes():
    reply = ("017\r0: 49 02 01 00 00 00\r1: 31 44 34 47 50 30 30\r2: 52 35 35 42 31 32 33\r"
             "3: 34 35 36 AA AA AA AA")
    assert pids.decode_vin(parse_reply(reply)) == VIN


def test_legacy_five_line_vin_with_filler():
    reply = ("49 02 01 00 00 00 31\r49 02 02 44 34 47 50\r49 02 03 30 30 52 35\r"
             "49 02 04 35 42 31 32\r49 02 05 33 34 35 36")
    assert pids.decode_vin(parse_reply(reply)) == VIN


def test_legacy_vin_lines_out_of_order_are_put_in_order():
    reply = ("49 02 02 44 34 47 50\r49 02 01 00 00 00 31\r49 02 03 30 30 52 35\r"
             "49 02 05 33 34 35 36\r49 02 04 35 42 31 32")
    assert pids.decode_vin(parse_reply(reply)) == VIN


def test_legacy_vin_missing_a_line_is_rejected_not_truncated():
    reply = ("49 02 01 00 00 00 31\r49 02 02 44 34 47 50\r"
             "49 02 04 35 42 31 32\r49 02 05 33 34 35 36")
    with pytest.raises(DecodeError, match="not 1..4"):
        pids.decode_vin(parse_reply(reply))


def test_vin_with_forbidden_letters_is_rejected():
    bad = "1D4GP00R55BI23456".encode().hex()   # I is not allowed in a VIN
    frames = bytes.fromhex("490201" + bad)
    with pytest.raises(DecodeError, match="not a 17-character VIN"):
        pids.decode_vin([frames])


def test_vin_reply_without_vin_message_is_a_decode_error():
    with pytest.raises(DecodeError, match="no VIN message"):
        pids.decode_vin(parse_reply("41 0D 58"))
