"""The canonical wire encoding (contracts.wire.encode)."""
from __future__ import annotations

import json

import pytest

from smartcity.contracts import RECORD_TYPES, encode, example, validate


@pytest.mark.parametrize("rt", RECORD_TYPES, ids=lambda rt: rt.name)
def test_canonical_bytes_are_compact_json_with_every_field_in_contract_order(rt):
    rec = example(rt.name)
    shuffled = dict(reversed(list(rec.items())))
    missing_nullable = {k: v for k, v in rec.items()
                        if not (v is None and k == next((f.name for f in rt.fields if f.nullable), None))}
    for variant in (rec, shuffled, missing_nullable):
        raw = encode(rt, variant)
        assert list(json.loads(raw)) == list(rt.field_names)
        assert b", " not in raw and b": " not in raw
        assert raw == encode(rt, rec)
    validate(rt, json.loads(encode(rt, rec)))


def test_fields_outside_the_contract_are_kept_for_validation_to_reject():
    raw = encode("gps_data", {**example("gps_data"), "surprise": 1})
    assert list(json.loads(raw))[-1] == "surprise"


def test_text_is_utf8_not_ascii_escapes_and_non_finite_numbers_are_refused():
    rec = {**example("vehicle_data"), "model": "Hilux Revo \u0e01"}
    assert "\u0e01".encode() in encode("vehicle_data", rec)
    with pytest.raises(ValueError):
        encode("vehicle_data", {**example("vehicle_data"), "speed_kmh": float("nan")})
