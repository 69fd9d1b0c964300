"""DHT reading: one physical read per interval, retries, plausibility, counters; lazy hardware."""
import subprocess
import sys
import types
from datetime import datetime, timedelta, timezone

import pytest

from smartcity.edge.dht import DhtReader, DhtStats, DhtUnavailableError, hardware_device
from smartcity.sim.dht import SimulatedDhtDevice
from smartcity.sim.weather import WeatherModel

START = datetime(2026, 11, 28, 1, 0, tzinfo=timezone.utc)


class FakeClock:
    """Monotonic time that only moves when someone sleeps or the test says so."""

    def __init__(self):
        self.t = 100.0
        self.sleeps = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


class ScriptedDevice:
    """adafruit_dht's interface with a scripted sequence of measurements: each item is a
    (temperature, humidity) pair or an exception to raise. Like the real driver, reading
    .temperature measures and .humidity returns that same measurement."""

    def __init__(self, script, clock):
        self.script = list(script)
        self.clock = clock
        self.measured_at = []
        self.exited = False
        self._t = self._h = None

    @property
    def temperature(self):
        self.measured_at.append(self.clock())
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        self._t, self._h = item
        return self._t

    @property
    def humidity(self):
        return self._h

    def exit(self):
        self.exited = True


def reader_with(script, clock=None, **kw):
    """A reader on a scripted device. The first-read confirmation is off unless asked for, so each
    test's script reads one measurement per accepted value."""
    clock = clock or FakeClock()
    dev = ScriptedDevice(script, clock)
    kw.setdefault("confirm_first", False)
    return DhtReader(lambda: dev, clock=clock, sleep=clock.sleep, **kw), dev, clock


def test_one_physical_read_per_interval_the_rest_from_cache():
    reader, dev, clock = reader_with([(25.0, 60.0), (25.2, 61.0)])
    first = reader.read()
    assert (first.temperature_c, first.humidity_pct, first.cached) == (25.0, 60.0, False)
    clock.t += 1.0
    again = reader.read()
    assert again.cached and again.temperature_c == 25.0 and len(dev.measured_at) == 1
    clock.t += 1.5
    assert reader.read().temperature_c == 25.2 and len(dev.measured_at) == 2
    assert reader.stats.reads_ok == 2 and reader.stats.cached == 1


def test_checksum_failures_are_retried_no_faster_than_the_sensor_allows():
    reader, dev, clock = reader_with([RuntimeError("Checksum did not validate. Try again."),
                                      RuntimeError("A full buffer was not returned. Try again."),
                                      (24.5, 70.0)])
    r = reader.read()
    assert r.temperature_c == 24.5
    assert reader.stats.read_errors == 2 and reader.stats.retries == 2 and reader.stats.reads_ok == 1
    gaps = [b - a for a, b in zip(dev.measured_at, dev.measured_at[1:])]
    assert all(g >= 2.0 for g in gaps)


def test_after_all_retries_fail_the_read_is_none_and_counted():
    reader, dev, _ = reader_with([RuntimeError("x")] * 4, retries=3)
    assert reader.read() is None
    assert len(dev.measured_at) == 4
    assert reader.stats.failed == 1 and reader.stats.read_errors == 4 and reader.stats.retries == 3


def test_a_reading_without_values_is_an_error_not_a_zero():
    reader, _, _ = reader_with([(None, None), (26.0, 55.0)])
    assert reader.read().temperature_c == 26.0
    assert reader.stats.read_errors == 1


def test_out_of_range_values_are_rejected_per_model():
    reader, _, _ = reader_with([(3276.7, 50.0), (25.0, 6553.5), (25.0, 50.0)])
    assert reader.read().temperature_c == 25.0
    assert reader.stats.implausible == 2
    dht11, _, _ = reader_with([(55.0, 50.0), (30.0, 95.0), (30.0, 60.0)], model="dht11")
    assert dht11.read().temperature_c == 30.0 and dht11.stats.implausible == 2
    dht22, _, _ = reader_with([(55.0, 95.0)], model="dht22")
    assert dht22.read().temperature_c == 55.0           # fine for a DHT22


def test_a_sudden_jump_is_rejected_but_a_lasting_change_is_accepted():
    reader, _, clock = reader_with([(25.0, 60.0), (50.6, 60.0), (25.3, 61.0), (33.0, 62.0)])
    reader.read()
    clock.t += 3
    assert reader.read().temperature_c == 25.3          # 50.6 rejected, retry accepted
    assert reader.stats.implausible == 1
    clock.t += 30                                       # long after the step window
    assert reader.read().temperature_c == 33.0


def test_step_limits_are_configurable():
    reader, _, clock = reader_with([(25.0, 60.0), (33.0, 80.0)], max_step_c=10, max_step_pct=25)
    reader.read()
    clock.t += 3
    assert reader.read().temperature_c == 33.0 and reader.stats.implausible == 0


def test_humidity_jump_is_rejected_too():
    reader, _, clock = reader_with([(25.0, 60.0), (25.0, 90.0), (25.0, 62.0)])
    reader.read()
    clock.t += 3
    assert reader.read().humidity_pct == 62.0 and reader.stats.implausible == 1


def test_without_a_recent_reference_a_read_needs_a_second_that_agrees():
    reader, dev, clock = reader_with([(51.9, 86.0), (26.1, 80.0), (26.2, 80.5)], confirm_first=True)
    r = reader.read()                       # a spike first: held, then contradicted, then confirmed
    assert r.temperature_c == 26.2 and len(dev.measured_at) == 3
    assert reader.stats.unconfirmed == 2 and reader.stats.reads_ok == 1
    clock.t += 60                           # long gap: the next value must be confirmed again
    dev.script += [(30.0, 70.0), (30.1, 70.2)]
    assert reader.read().temperature_c == 30.1 and reader.stats.unconfirmed == 3


def test_stale_cache_is_not_served():
    reader, _, clock = reader_with([(25.0, 60.0)] + [RuntimeError("x")] * 200,
                                   max_cache_age_s=60)
    reader.read()
    while clock.t < 200:
        clock.t += 2.0
        assert reader.read() is None
    clock.t += 0.5                                      # inside the interval: cache path
    assert reader.read() is None


def test_an_unexpected_error_reinitialises_the_device():
    clock = FakeClock()
    devices = []

    def factory():
        script = [OSError("gpio busy")] if not devices else [(27.0, 65.0)]
        devices.append(ScriptedDevice(script, clock))
        return devices[-1]

    reader = DhtReader(factory, clock=clock, sleep=clock.sleep, confirm_first=False)
    assert reader.read().temperature_c == 27.0
    assert devices[0].exited and len(devices) == 2 and reader.stats.reinits == 1


def test_shared_stats_object_and_bad_arguments():
    stats = DhtStats()
    reader, _, _ = reader_with([(25.0, 60.0)], stats=stats)
    reader.read()
    assert stats.as_dict()["reads_ok"] == 1
    with pytest.raises(ValueError):
        reader_with([], model="dht99")
    with pytest.raises(ValueError):
        reader_with([], retries=-1)


def _sim_device(clock, **kw):
    weather = WeatherModel(1)
    # 1 wall second = 30 simulated seconds, somewhere on Motorway 7
    now = lambda: (START + timedelta(seconds=(clock() - 100.0) * 30), 13.4, 101.04)  # noqa: E731
    return SimulatedDhtDevice(weather, now, monotonic=clock, **kw), weather, now


def test_reader_on_the_simulated_sensor_accepts_only_believable_values():
    clock = FakeClock()
    dev, weather, now = _sim_device(clock, seed=3, error_rate=0.2, spike_rate=0.05)
    reader = DhtReader(lambda: dev, clock=clock, sleep=clock.sleep)
    got = []
    for _ in range(600):
        clock.t += 2.0
        r = reader.read()
        if r is not None and not r.cached:
            got.append(r)
            w = weather.at(now()[0], 13.4, 101.04)
            assert abs(r.temperature_c - w["temperature_c"]) < 1.5
            assert abs(r.humidity_pct - w["humidity_pct"]) < 5
    st = reader.stats
    assert st.read_errors == dev.failures_injected > 50
    assert dev.spikes_injected > 5 and st.implausible >= dev.spikes_injected * 0.8
    assert st.reads_ok == len(got)
    assert st.reads_ok + st.read_errors + st.implausible + st.unconfirmed == dev.measurements
    assert st.retries > 0


def test_simulated_sensor_behaves_like_the_adafruit_driver():
    clock = FakeClock()
    dev, _, _ = _sim_device(clock, error_rate=0.0, spike_rate=0.0)
    t = dev.temperature
    assert dev.humidity is not None and dev.measurements == 1
    clock.t += 1.0
    assert dev.temperature == t and dev.measurements == 1      # inside 2 s: previous values
    clock.t += 1.5
    dev.temperature
    assert dev.measurements == 2
    assert round(t, 1) == t                                    # DHT22 resolution 0.1
    dev.exit()
    with pytest.raises(ValueError):
        dev.temperature
    failing, _, _ = _sim_device(clock, error_rate=1.0)
    with pytest.raises(RuntimeError):
        failing.temperature


def test_simulated_dht11_reports_whole_numbers_inside_its_range():
    clock = FakeClock()
    dev, _, _ = _sim_device(clock, model="dht11", error_rate=0.0, spike_rate=0.0)
    for _ in range(20):
        clock.t += 1.0
        t, h = dev.temperature, dev.humidity
        assert t == int(t) and h == int(h) and 20 <= h <= 90


def test_hardware_device_without_blinka_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "adafruit_dht", None)   # import raises ImportError
    with pytest.raises(DhtUnavailableError, match=r"pip install '\.\[pi\]'"):
        hardware_device("dht22", "D4")
    assert not issubclass(DhtUnavailableError, RuntimeError)  # never mistaken for a bad read
    monkeypatch.setitem(sys.modules, "adafruit_dht", types.ModuleType("adafruit_dht"))
    monkeypatch.setitem(sys.modules, "board", None)
    with pytest.raises(DhtUnavailableError, match="board"):
        hardware_device("dht22", "D4")


def test_hardware_device_maps_pin_names_to_board_pins(monkeypatch):
    made = []
    fake_dht = types.ModuleType("adafruit_dht")
    fake_dht.DHT22 = lambda pin, use_pulseio=True: made.append(("dht22", pin)) or "dev22"
    fake_dht.DHT11 = lambda pin, use_pulseio=True: made.append(("dht11", pin)) or "dev11"
    fake_board = types.ModuleType("board")
    fake_board.D4 = "pin-4"
    monkeypatch.setitem(sys.modules, "adafruit_dht", fake_dht)
    monkeypatch.setitem(sys.modules, "board", fake_board)
    assert hardware_device("DHT22", "D4") == "dev22"
    assert hardware_device("dht11", "GPIO4") == "dev11"
    assert hardware_device("dht22", "4") == "dev22"
    assert made == [("dht22", "pin-4"), ("dht11", "pin-4"), ("dht22", "pin-4")]
    with pytest.raises(ValueError, match="unknown pin"):
        hardware_device("dht22", "D99")
    with pytest.raises(ValueError, match="model"):
        hardware_device("am2302", "D4")


def test_importing_the_driver_layer_does_not_import_the_hardware_libraries():
    code = ("import sys, edge.dht; "
            "assert 'adafruit_dht' not in sys.modules and 'board' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_simulated_sensor_counts_its_interval_on_simulated_time():
    sim_s = [0.0]
    now = lambda: (START + timedelta(seconds=sim_s[0]), 13.75, 100.55)  # noqa: E731
    dev = SimulatedDhtDevice(WeatherModel(1), now, error_rate=0.0, spike_rate=0.0)
    dev.temperature
    sim_s[0] += 1.0
    dev.temperature
    assert dev.measurements == 1
    sim_s[0] += 1.5                    # 2.5 simulated seconds later, however little wall time
    dev.temperature
    assert dev.measurements == 2
