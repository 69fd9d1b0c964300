"""Thai lowland weather: a daily cycle, seeded rain spells, values inside the contract."""
from datetime import datetime, timedelta, timezone

import pytest

import smartcity.contracts as contracts
from smartcity.sim.weather import CONDITIONS, WeatherModel

LOCAL_MIDNIGHT = datetime(2026, 11, 27, 17, 0, tzinfo=timezone.utc)   # 00:00 in Bangkok
BANGKOK = (13.75, 100.55)
PATTAYA = (12.93, 100.88)


def _day(model, lat, lon, days=1, step_s=300):
    return [(LOCAL_MIDNIGHT + timedelta(seconds=i * step_s),
             model.at(LOCAL_MIDNIGHT + timedelta(seconds=i * step_s), lat, lon))
            for i in range(int(days * 86400 / step_s))]


def test_same_seed_same_weather_whatever_the_order_of_questions():
    a, b = WeatherModel(3), WeatherModel(3)
    ts = [LOCAL_MIDNIGHT + timedelta(minutes=37 * i) for i in range(100)]
    forward = [a.at(t, *BANGKOK) for t in ts]
    backward = [b.at(t, *BANGKOK) for t in reversed(ts)][::-1]
    assert forward == backward


def test_nights_are_about_26_and_afternoons_about_33():
    m = WeatherModel(1)
    for day in range(3):
        base = LOCAL_MIDNIGHT + timedelta(days=day)
        dawn = m.at(base + timedelta(hours=5, minutes=30), *BANGKOK)["temperature_c"]
        afternoon = m.at(base + timedelta(hours=14, minutes=30), *BANGKOK)["temperature_c"]
        assert 24 <= dawn <= 28.5
        assert afternoon - dawn > 3     # even a rainy afternoon is warmer than dawn
    dry = [(t, w) for t, w in _day(m, *BANGKOK, days=7) if w["precipitation_mm"] == 0]
    afternoons = [w["temperature_c"] for t, w in dry if 13 <= (t.hour + 7) % 24 < 16]
    nights = [w["temperature_c"] for t, w in dry if 3 <= (t.hour + 7) % 24 < 6]
    assert 31.5 <= sum(afternoons) / len(afternoons) <= 34.5
    assert 25 <= sum(nights) / len(nights) <= 28


def test_humidity_runs_opposite_to_temperature():
    m = WeatherModel(1)
    dry = [w for _, w in _day(m, *BANGKOK, days=3) if w["precipitation_mm"] == 0]
    hottest = max(dry, key=lambda w: w["temperature_c"])
    coolest = min(dry, key=lambda w: w["temperature_c"])
    assert hottest["humidity_pct"] < coolest["humidity_pct"] - 15


def test_rain_comes_in_spells_mostly_in_the_afternoon_and_evening():
    rainy_hours = []
    for seed in range(6):
        m = WeatherModel(seed)
        wet = [t for t, w in _day(m, *BANGKOK, days=7) if w["weather_condition"] in ("rain", "storm")]
        assert wet, f"seed {seed}: a week without rain"
        assert len(wet) < 0.25 * 7 * 288                      # but mostly dry
        rainy_hours += [(t.hour + 7) % 24 for t in wet]
    afternoon = sum(1 for h in rainy_hours if 13 <= h <= 22)
    assert afternoon > 0.5 * len(rainy_hours)


def test_rain_wets_cools_and_cleans_the_air():
    m = WeatherModel(2)
    series = _day(m, *BANGKOK, days=7)
    for i, (t, w) in enumerate(series):
        if w["precipitation_mm"] > 5:
            before = series[i - 24][1]       # two hours earlier
            if before["precipitation_mm"] == 0:
                assert w["humidity_pct"] > before["humidity_pct"]
                assert w["air_quality_index"] < before["air_quality_index"]
                return
    pytest.fail("no heavy rain after a dry spell in a week")


def test_weather_is_smooth_in_time():
    m = WeatherModel(4)
    prev = None
    for _, w in _day(m, *BANGKOK, days=2, step_s=10):
        if prev:
            assert abs(w["temperature_c"] - prev["temperature_c"]) <= 0.15
            assert abs(w["humidity_pct"] - prev["humidity_pct"]) <= 1.0
            assert abs(w["precipitation_mm"] - prev["precipitation_mm"]) <= 0.6
        prev = w


def test_every_value_fits_the_weather_contract():
    m = WeatherModel(5)
    seen = set()
    for place in (BANGKOK, PATTAYA, (13.4, 101.04)):
        for t, w in _day(m, *place, days=4, step_s=600):
            assert w["weather_condition"] in CONDITIONS
            seen.add(w["weather_condition"])
            rec = contracts.example("weather")
            rec.update(w, lat=place[0], lon=place[1], ts=contracts.format_ts(t))
            contracts.validate("weather", rec)
    assert {"clear", "cloudy", "rain"} <= seen


def test_the_coast_is_breezier_than_bangkok_in_the_afternoon():
    m = WeatherModel(6)
    t = LOCAL_MIDNIGHT + timedelta(hours=15)
    assert m.at(t, *PATTAYA)["wind_speed_kmh"] > m.at(t, *BANGKOK)["wind_speed_kmh"]
    assert m.at(t, *PATTAYA)["air_quality_index"] < m.at(t, *BANGKOK)["air_quality_index"]


def test_naive_time_is_refused():
    with pytest.raises(ValueError):
        WeatherModel(1).at(datetime(2026, 1, 1), *BANGKOK)
