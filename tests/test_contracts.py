"""The contracts are the one definition of the record types; everything else derives from them."""
import json
from pathlib import Path

import jsonschema
import pytest

import smartcity.contracts as c
from smartcity.contracts.jsonschema import all_schemas

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rt", c.RECORD_TYPES, ids=lambda r: r.name)
def test_every_record_type_has_the_envelope_and_a_valid_example(rt):
    assert rt.field_names[: len(c.ENVELOPE)] == tuple(f.name for f in c.ENVELOPE)
    c.validate(rt, c.example(rt.name))
    jsonschema.validate(c.example(rt.name), all_schemas()[rt.name])


def test_kafka_topics_and_mqtt_streams_are_the_documented_five():
    assert sorted(r.name for r in c.RECORD_TYPES) == [
        "emergency_data", "gps_data", "traffic_data", "vehicle_data", "weather_data"]
    assert sorted(c.STREAMS) == ["emergency", "gps", "traffic", "vehicle", "weather"]


def test_violations_name_field_value_and_rule():
    rec = c.example("gps")
    rec.update(fix_mode=5, lat=91.0, ts="2026-01-01 00:00:00", bogus=1)
    rec.pop("seq")
    with pytest.raises(c.ContractError) as e:
        c.validate("gps_data", rec)
    by_field = {v.field: v for v in e.value.violations}
    assert set(by_field) == {"fix_mode", "lat", "ts", "bogus", "seq"}
    assert by_field["lat"].value == 91.0 and "<= 90" in by_field["lat"].rule
    assert "one of [1, 2, 3]" in by_field["fix_mode"].rule
    assert "missing" in by_field["seq"].rule
    assert "unknown field" in by_field["bogus"].rule
    assert "lat=91.0" in str(e.value)


@pytest.mark.parametrize("bad", [True, "3", 3.5, None])
def test_integers_reject_bools_strings_floats_and_null(bad):
    rec = c.example("gps")
    rec["fix_mode"] = bad
    assert [v.field for v in c.violations("gps", rec)] == ["fix_mode"]


def test_nullable_sensor_fields_accept_null_but_not_nan():
    rec = c.example("vehicle")
    assert rec["rpm"] is None and not c.violations("vehicle", rec)
    rec["rpm"] = float("nan")
    assert "finite" in c.violations("vehicle", rec)[0].rule


def test_a_non_object_payload_is_one_clear_violation():
    assert c.violations("gps", [1, 2])[0].rule == "must be a JSON object"


def test_jsonschema_agrees_with_validator_on_a_bad_record():
    rec = c.example("traffic")
    rec["vehicle_count"] = -1
    assert c.violations("traffic", rec)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rec, all_schemas()["traffic_data"])


def test_committed_json_schemas_are_generated_not_edited():
    for name, schema in all_schemas().items():
        committed = json.loads((ROOT / "contracts/jsonschema" / f"{name}.schema.json").read_text())
        assert committed == schema, f"regenerate with: python -m contracts jsonschema ({name})"


def test_event_id_is_deterministic_and_matches_the_contract():
    a = c.event_id("bus-7", "0badcafe", 42)
    assert a == c.event_id("bus-7", "0badcafe", 42) != c.event_id("bus-7", "0badcafe", 43)
    rec = c.example("gps")
    rec["event_id"] = a
    assert not c.violations("gps", rec)


def test_timestamps_are_utc_millis_with_z():
    from datetime import datetime, timedelta, timezone
    t = datetime(2026, 11, 28, 19, 5, 1, 123456, tzinfo=timezone(timedelta(hours=7)))
    assert c.format_ts(t) == "2026-11-28T12:05:01.123Z"
    assert c.parse_ts(c.format_ts(t)) == t.replace(microsecond=123000)
    with pytest.raises(ValueError):
        c.format_ts(datetime(2026, 1, 1))


def test_mqtt_topic_layout_round_trips_and_rejects_wildcards():
    t = c.mqtt_topic("bus-7", "gps")
    assert t == "smartcity/v1/bus-7/gps"
    assert c.parse_mqtt_topic(t) == ("bus-7", "gps")
    for bad in ("smartcity/v1/bus-7/radio", "smartcity/v2/bus-7/gps", "smartcity/v1/a/b/gps"):
        with pytest.raises(ValueError):
            c.parse_mqtt_topic(bad)
    with pytest.raises(ValueError):
        c.mqtt_topic("a/b", "gps")


@pytest.mark.parametrize("field,value", [("device_id", "bus-1\n"), ("event_id", "bus-1:0badcafe:1\n"),
                                         ("ts", "2026-11-28T12:43:09.123Z\n")])
def test_a_trailing_newline_is_refused_by_every_validator(field, value):
    # A "$" with re.search accepts "bus-1\n": each pattern must match the whole value.
    rec = {**c.example("gps"), "device_id": "bus-1", "event_id": "bus-1:0badcafe:1", field: value}
    assert [v.field for v in c.violations("gps", rec)] == [field]
    assert c.checker("gps")(rec) is False
    assert c.checker("gps")({**rec, field: value.rstrip("\n")}) is True


def test_every_pattern_is_anchored_so_searching_engines_read_the_same_rule():
    # Python checks with fullmatch; JSON Schema validators and Spark's rlike search instead.
    for rt in c.RECORD_TYPES:
        for f in rt.fields:
            if f.pattern is not None:
                assert f.pattern.startswith("^") and f.pattern.endswith("$"), (rt.name, f.name)


def test_a_topic_with_a_trailing_newline_is_not_a_data_topic():
    with pytest.raises(ValueError):
        c.parse_mqtt_topic("smartcity/v1/bus-1/gps\n")


def test_docs_contracts_md_is_generated_from_the_contracts():
    from smartcity.contracts.__main__ import markdown
    committed = (ROOT / "docs/contracts.md").read_text()
    assert committed.strip() == markdown().strip(), \
        "regenerate with: python -m contracts docs > docs/contracts.md"


def test_integers_beyond_the_lake_columns_are_violations_not_overflows():
    rec = c.example("gps")
    rec["seq"] = 2**63
    assert [v.rule for v in c.violations("gps", rec)] == ["out of range for a 64-bit int"]
    rec = c.example("gps")
    rec["lat"] = int("1" + "0" * 400)  # valid JSON; has no double: must not raise OverflowError
    assert [v.rule for v in c.violations("gps", rec)] == ["must be finite"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**c.example("gps"), "seq": 2**63}, all_schemas()["gps_data"])


_TRICKY = [None, True, False, 0, 1, 3, -1, 2**31, 2**63, int("9" * 400), 0.5, 90.0, 1e308,
           float("nan"), float("inf"), "", "x", "x" * 300, "sim", "system", "Active", "rain",
           "2026-11-28T12:43:09.123Z", "2026-02-30T12:43:09.123Z", "2026-11-28T12:43:09Z",
           "dev-1:0123abcd:5", "dev-1:0123abcd:5\n", "bus-1\n", "2026-11-28T12:43:09.123Z\n",
           [1], {"a": 1}]


@pytest.mark.parametrize("rt", c.RECORD_TYPES, ids=lambda rt: rt.name)
def test_the_fast_checker_agrees_with_violations_on_every_tricky_value(rt):
    ok = c.checker(rt)
    base = c.example(rt.name)
    cases = [base, [base], "text", None, {**base, "extra": 1}]
    for f in rt.fields:
        cases.append({k: v for k, v in base.items() if k != f.name})
        cases += [{**base, f.name: v} for v in _TRICKY]
    for rec in cases:
        assert ok(rec) is (not c.violations(rt, rec)), rec
