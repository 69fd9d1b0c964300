"""Tricky payloads and the verdict both sides must give (contracts.jsontext is the rule).

Each case: (name, topic, payload bytes, bridge verdict). The bridge verdict is inspect()'s DLQ
reason, None when it forwards the record. The lake's verdict follows from it (LAKE below):
- None                         -> a data row;
- "contract_invalid"           -> quarantine, error_kind "contract" or "not_object";
- a contracts.jsontext reason  -> quarantine, error_kind "bad_json", reason "<that reason>: ...".
Every record claims device "car-1", the device of the MQTT topic the bridge test uses, and an
event time far before the lake test's ingest time.
"""
from __future__ import annotations

import json

from smartcity.contracts import encode, example
from smartcity.contracts.jsontext import DUPLICATE_KEY, MAX_DEPTH, MAX_NAME_LENGTH, MAX_NUMBER_DIGITS, NOT_JSON, TOO_DEEP

CONTRACT = "contract_invalid"
GPS, EMERGENCY = "gps_data", "emergency_data"
DEVICE = "car-1"


def _record(topic: str, **changes) -> dict:
    r = example(topic)
    r.update(event_id=f"{DEVICE}:0000abcd:7", device_id=DEVICE, seq=7, **changes)
    return r


GPS_REC = _record(GPS, lat=52.37, lon=4.89, alt_m=1.5, speed_kmh=42.0, heading_deg=180.0, fix_mode=3,
                  sats_used=9, hdop=0.9)
EMERG_REC = _record(EMERGENCY, description="a note")
GPS_BYTES = encode(GPS, GPS_REC)
EMERG_BYTES = encode(EMERGENCY, EMERG_REC)


def gps_with(field: str, raw: bytes) -> bytes:
    """The canonical gps record with one field's JSON text replaced by `raw`, as is."""
    head, sep, tail = GPS_BYTES.partition(b'"' + field.encode() + b'":')
    assert sep, field
    end = min(i for i in (tail.find(b","), tail.find(b"}")) if i >= 0)  # values here are numbers
    return head + sep + raw + tail[end:]


def description(raw: bytes) -> bytes:
    """The emergency record with `raw` as the text between the description's quotes."""
    return EMERG_BYTES.replace(b'"description":"a note"', b'"description":"' + raw + b'"')


def nested(n: int, inner: bytes = b"1") -> bytes:
    return b"[" * n + inner + b"]" * n


CASES: list[tuple[str, str, bytes, str | None]] = [
    # --- valid: forwarded by the bridge, a data row in the lake ------------------------------
    ("canonical", GPS, GPS_BYTES, None),
    ("spaced, other key order", GPS, json.dumps(dict(reversed(list(GPS_REC.items())))).encode(), None),
    ("JSON whitespace around", GPS, b" \t\r\n" + GPS_BYTES + b"\r\n \t", None),
    ("escaped key and value", GPS, GPS_BYTES.replace(b'"clock":"sim"', b'"\\u0063lock":"\\u0073im"'), None),
    ("exponent and -0.0", GPS, gps_with("lat", b"5.237E1").replace(b'"heading_deg":180.0', b'"heading_deg":-0.0'), None),
    ("underflow to 0", GPS, gps_with("speed_kmh", b"1e-400"), None),
    ("surrogate pair escape", EMERGENCY, description(b"car \\ud83d\\ude97"), None),
    ("raw UTF-8 text", EMERGENCY, description("Unfall auf der Brücke ⚠ 🚗".encode()), None),
    ("brackets inside a string", EMERGENCY, description(b"[" * 200 + b"{" * 200), None),
    ("NaN and Infinity inside a string", EMERGENCY, description(b"NaN Infinity -Infinity"), None),
    ("escaped backslash before ud800", EMERGENCY, description(b"C:\\\\ud800"), None),
    ("escaped quote and NUL escape", EMERGENCY, description(b'say \\"hi\\" \\u0000 \\/'), None),
    # --- JSON, but not a valid record: contract check (lake: contract / not_object) ----------
    ("top-level null", GPS, b"null", CONTRACT),
    ("top-level number", GPS, b"1", CONTRACT),
    ("top-level array", GPS, b"[" + GPS_BYTES + b"]", CONTRACT),
    ("empty object", GPS, b"{}", CONTRACT),
    ("keys differ only in case", GPS, GPS_BYTES[:-1] + b',"LAT":1}', CONTRACT),
    ("nested 2 deep", GPS, gps_with("lat", b"[[1]]"), CONTRACT),
    (f"nested {MAX_DEPTH} deep in all", GPS, gps_with("lat", nested(MAX_DEPTH - 1)), CONTRACT),
    ("1e400 (a number, overflows)", GPS, gps_with("lat", b"1e400"), CONTRACT),
    ("30-digit integer", GPS, gps_with("seq", b"1" * 30), CONTRACT),
    (f"{MAX_NUMBER_DIGITS}-digit integer", GPS, gps_with("seq", b"1" * MAX_NUMBER_DIGITS), CONTRACT),
    (f"{MAX_NUMBER_DIGITS}-digit float", GPS, gps_with("lat", b"1" * 500 + b"." + b"1" * 499 + b"e1"), CONTRACT),
    (f"key of {MAX_NAME_LENGTH} characters", GPS, GPS_BYTES[:-1] + b',"' + b"k" * MAX_NAME_LENGTH + b'":1}', CONTRACT),
    ("astral character in event_id", GPS,
     GPS_BYTES.replace(b'"event_id":"car-1:', '"event_id":"car-1\U0001F697:'.encode()), CONTRACT),
    # --- not JSON (reason not_json) -----------------------------------------------------------
    ("empty", GPS, b"", NOT_JSON),
    ("whitespace only", GPS, b" \n", NOT_JSON),
    ("truncated", GPS, GPS_BYTES[:40], NOT_JSON),
    ("garbage after the record", GPS, GPS_BYTES + b" x", NOT_JSON),
    ("two records", GPS, GPS_BYTES + GPS_BYTES, NOT_JSON),
    ("record then ]", GPS, GPS_BYTES + b"]", NOT_JSON),
    ("record then ,1", GPS, GPS_BYTES + b",1", NOT_JSON),
    ("record then a comment", GPS, GPS_BYTES + b"//c", NOT_JSON),
    ("record then NUL", GPS, GPS_BYTES + b"\x00", NOT_JSON),
    ("record then no-break space", GPS, GPS_BYTES + "\u00a0".encode(), NOT_JSON),
    ("form feed before", GPS, b"\x0c" + GPS_BYTES, NOT_JSON),
    ("UTF-8 byte order mark", GPS, b"\xef\xbb\xbf" + GPS_BYTES, NOT_JSON),
    ("UTF-16", GPS, GPS_BYTES.decode().encode("utf-16"), NOT_JSON),
    ("UTF-32", GPS, GPS_BYTES.decode().encode("utf-32"), NOT_JSON),
    ("invalid byte 0xff", EMERGENCY, description(b"\xff"), NOT_JSON),
    ("overlong encoding", EMERGENCY, description(b"\xc0\xaf"), NOT_JSON),
    ("encoded surrogate (CESU-8)", EMERGENCY, description(b"\xed\xa0\x80"), NOT_JSON),
    ("multibyte cut at the end", EMERGENCY, description("é".encode()[:1]), NOT_JSON),
    ("binary", GPS, bytes(range(256)), NOT_JSON),
    ("lone high surrogate escape", EMERGENCY, description(b"\\ud800"), NOT_JSON),
    ("lone low surrogate escape", EMERGENCY, description(b"\\udc00"), NOT_JSON),
    ("high surrogate then a letter", EMERGENCY, description(b"\\ud83d\\u0041"), NOT_JSON),
    ("NaN", GPS, gps_with("lat", b"NaN"), NOT_JSON),
    ("Infinity", GPS, gps_with("lat", b"Infinity"), NOT_JSON),
    ("-Infinity", GPS, gps_with("lat", b"-Infinity"), NOT_JSON),
    ("+Infinity", GPS, gps_with("lat", b"+Infinity"), NOT_JSON),
    ("-INF", GPS, gps_with("lat", b"-INF"), NOT_JSON),
    ("-NaN", GPS, gps_with("lat", b"-NaN"), NOT_JSON),
    ("NaN nested in an array", GPS, gps_with("lat", b"[[NaN]]"), NOT_JSON),
    ("single quotes", GPS, GPS_BYTES.replace(b'"clock":"sim"', b"'clock':'sim'"), NOT_JSON),
    ("unquoted key", GPS, GPS_BYTES.replace(b'"clock":', b"clock:"), NOT_JSON),
    ("trailing comma", GPS, GPS_BYTES[:-1] + b",}", NOT_JSON),
    ("leading zero", GPS, gps_with("seq", b"07"), NOT_JSON),
    ("plus sign", GPS, gps_with("seq", b"+7"), NOT_JSON),
    ("point first", GPS, gps_with("lat", b".5"), NOT_JSON),
    ("point last", GPS, gps_with("lat", b"5."), NOT_JSON),
    ("hexadecimal", GPS, gps_with("seq", b"0x7"), NOT_JSON),
    ("True", GPS, gps_with("lat", b"True"), NOT_JSON),
    ("comment inside", GPS, gps_with("lat", b"1/*c*/"), NOT_JSON),
    ("raw control character in a string", EMERGENCY, description(b"a\x01b"), NOT_JSON),
    ("raw newline in a string", EMERGENCY, description(b"a\nb"), NOT_JSON),
    ("unknown escape", EMERGENCY, description(b"\\q"), NOT_JSON),
    ("short unicode escape", EMERGENCY, description(b"\\u12"), NOT_JSON),
    (f"{MAX_NUMBER_DIGITS + 1}-digit integer", GPS, gps_with("seq", b"1" * (MAX_NUMBER_DIGITS + 1)), NOT_JSON),
    (f"{MAX_NUMBER_DIGITS + 1}-digit float", GPS, gps_with("lat", b"1" * 500 + b"." + b"1" * 501), NOT_JSON),
    ("5000-digit integer", GPS, gps_with("seq", b"1" * 5000), NOT_JSON),
    (f"key of {MAX_NAME_LENGTH + 1} characters", GPS,
     GPS_BYTES[:-1] + b',"' + b"k" * (MAX_NAME_LENGTH + 1) + b'":1}', NOT_JSON),
    ("long key as escapes", GPS, GPS_BYTES[:-1] + b',"' + b"\\u006b" * (MAX_NAME_LENGTH + 1) + b'":1}', NOT_JSON),
    # Several faults: the first in contracts.jsontext's order is the reason.
    ("duplicate key and garbage after", GPS, GPS_BYTES[:-1] + b',"seq":8} x', NOT_JSON),
    ("duplicate key and NaN", GPS, gps_with("lat", b"NaN")[:-1] + b',"seq":8}', NOT_JSON),
    ("duplicate key and a long key", GPS,
     GPS_BYTES[:-1] + b',"seq":8,"' + b"k" * (MAX_NAME_LENGTH + 1) + b'":1}', NOT_JSON),
    ("too deep and invalid UTF-8", GPS, gps_with("lat", nested(5000, b'"\xff"')), NOT_JSON),
    # --- too deep (reason too_deep) -----------------------------------------------------------
    (f"nested {MAX_DEPTH + 1} deep in all", GPS, gps_with("lat", nested(MAX_DEPTH)), TOO_DEEP),
    ("nested 5000 deep", GPS, gps_with("lat", nested(5000)), TOO_DEEP),
    ("nested 10000 deep", GPS, nested(10000), TOO_DEEP),
    ("objects 1000 deep", GPS, b'{"a":' * 1000 + b"1" + b"}" * 1000, TOO_DEEP),
    ("10000 openers, never closed", GPS, b"[" * 10000, TOO_DEEP),
    ("deep garbage after the record", GPS, GPS_BYTES + nested(100), TOO_DEEP),
    ("too deep and NaN", GPS, gps_with("lat", nested(100, b"NaN")), TOO_DEEP),
    ("too deep and a duplicate key", GPS, gps_with("lat", nested(100))[:-1] + b',"seq":8}', TOO_DEEP),
    # --- duplicate keys (reason duplicate_key) ------------------------------------------------
    ("event_id twice (issue 9)", GPS, GPS_BYTES[:-1] + b',"event_id":"car-1:0000abcd:8"}', DUPLICATE_KEY),
    ("event_id twice, same value", GPS, GPS_BYTES[:-1] + b',"event_id":"car-1:0000abcd:7"}', DUPLICATE_KEY),
    ("duplicate through an escape", GPS, GPS_BYTES[:-1] + b',"\\u0065vent_id":"x:0000abcd:1"}', DUPLICATE_KEY),
    ("duplicate in a nested object", GPS, gps_with("lat", b'{"x":1,"x":2}'), DUPLICATE_KEY),
    ("duplicate and an unknown field", GPS, GPS_BYTES[:-1] + b',"seq":8,"surprise":1}', DUPLICATE_KEY),
]

LAKE = {None: ("data", {None}), CONTRACT: ("quarantine", {"contract", "not_object"})}
for _reason in (NOT_JSON, TOO_DEEP, DUPLICATE_KEY):
    LAKE[_reason] = ("quarantine", {"bad_json"})

assert len({name for name, *_ in CASES}) == len(CASES), "case names must be unique"
