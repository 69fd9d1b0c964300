"""The real ObdReader (pyserial) against the ELM327 emulator on a pseudo-terminal."""
from __future__ import annotations

import threading
import time

import pytest

from smartcity.edge.obd.elm327 import AdapterGone
from smartcity.edge.obd.reader import ObdReader, is_asleep
from smartcity.sim.elm327 import Elm327Emulator

VIN = "1HGCM82633A004352"
DRIVING = {"speed_kmh": 88.0, "rpm": 2150.5, "coolant_c": 90.0, "throttle_pct": 20.0,
           "engine_load_pct": 40.0, "fuel_level_pct": 60.0, "battery_v": 14.1}
# one count of the encoding: % PIDs are 100/255 per bit
TOLERANCE = {"speed_kmh": 0.5, "rpm": 0.125, "coolant_c": 0.5, "throttle_pct": 0.2,
             "engine_load_pct": 0.2, "fuel_level_pct": 0.2, "battery_v": 0.0005}
FAST = dict(timeout_s=0.3, reset_timeout_s=0.5, search_timeout_s=0.5,
            backoff_min_s=0.05, backoff_max_s=0.2, idle_max_s=0.4)


def wait_until(pred, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


@pytest.fixture
def values():
    return dict(DRIVING)


@pytest.fixture
def emu(tmp_path, values):
    e = Elm327Emulator(lambda: values, vin=VIN, link=str(tmp_path / "obd"))
    e.start()
    yield e
    e.drop()


class Running:
    """ObdReader.run on a thread, collecting readings."""

    def __init__(self, port: str, interval_s: float = 0.02):
        self.reader = ObdReader(port, **FAST)
        self.readings: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.reader.run,
                                       args=(self.stop, self.readings.append, interval_s),
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        assert wait_until(lambda: self.readings), "no first reading"
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(3)
        assert not self.thread.is_alive(), "run() did not return after stop"

    def more(self, n: int = 3, timeout_s: float = 5.0) -> list[dict]:
        start = len(self.readings)
        assert wait_until(lambda: len(self.readings) >= start + n, timeout_s), \
            f"reader stalled: {self.reader.stats}"
        return self.readings[start:]


def assert_matches(reading: dict, told: dict) -> None:
    for k, v in told.items():
        assert reading[k] == pytest.approx(v, abs=TOLERANCE[k]), k


def test_initialisation_configures_the_adapter_then_survives_searching(emu):
    r = ObdReader(emu.path, **FAST)
    reading = r.read_once()
    sent = [c for _, c in emu.commands]
    assert sent[:6] == ["ATZ", "ATE0", "ATL0", "ATS0", "ATH0", "ATSP0"]
    assert sent[6] == "0100"          # answered with SEARCHING... first
    assert r.elm.banner == "ELM327 v1.5"
    assert reading["speed_kmh"] == 88.0
    r.close()


def test_values_are_what_the_car_was_told_and_the_vin_is_17_characters(emu, values):
    r = ObdReader(emu.path, **FAST)
    reading = r.read_once()
    assert_matches(reading, values)
    assert reading["vin"] == VIN and len(reading["vin"]) == 17
    values.update(speed_kmh=12.0, rpm=850.0, coolant_c=-5.0, battery_v=13.9)
    assert_matches(r.read_once(), values)
    assert r.stats.reads_ok == 7 + 1 + 7
    r.close()


def test_vin_is_read_once_per_connection(emu):
    r = ObdReader(emu.path, **FAST)
    for _ in range(3):
        assert r.read_once()["vin"] == VIN
    assert len(emu.received("0902")) == 1
    r.close()


def test_legacy_protocol_five_line_vin(tmp_path, values):
    e = Elm327Emulator(lambda: values, vin=VIN, protocol="legacy")
    r = ObdReader(e.start(), **FAST)
    try:
        reading = r.read_once()
        assert reading["vin"] == VIN
        assert_matches(reading, values)
    finally:
        r.close()
        e.stop()


def test_can_vin_with_filler_bytes(values):
    e = Elm327Emulator(lambda: values, vin=VIN, vin_filler=True)
    r = ObdReader(e.start(), **FAST)
    try:
        assert r.read_once()["vin"] == VIN
    finally:
        r.close()
        e.stop()


def test_unsupported_pids_are_never_asked_and_read_as_none(values):
    e = Elm327Emulator(lambda: values, vin=VIN, unsupported={0x11, 0x2F, 0x42})
    r = ObdReader(e.start(), **FAST)
    try:
        reading = r.read_once()
        r.read_once()
        assert reading["throttle_pct"] is None and reading["fuel_level_pct"] is None
        assert not e.received("0111") and not e.received("012F") and not e.received("0142")
        # without PID 42 the voltage is the adapter's own pin-16 reading (ATRV, 0.1 V)
        assert reading["battery_v"] == pytest.approx(14.1, abs=0.05)
        assert len(e.received("ATRV")) == 2
        assert reading["rpm"] == 2150.5
        assert r.stats.no_data == 0     # nothing unsupported was asked
    finally:
        r.close()
        e.stop()


def test_bitmap_chain_stops_when_no_higher_pids_exist(values):
    e = Elm327Emulator(lambda: values, vin=VIN, unsupported={0x2F, 0x42})
    r = ObdReader(e.start(), **FAST)
    try:
        r.read_once()
        assert e.received("0100") and not e.received("0120") and not e.received("0140")
        assert r.supported >= {0x04, 0x05, 0x0C, 0x0D, 0x11}
    finally:
        r.close()
        e.stop()


@pytest.mark.parametrize("reply, counter", [
    ("CAN ERROR", "can_error"),
    ("?", "unknown_command"),
    ("STOPPED", "stopped"),
    ("UNABLE TO CONNECT", "unable_to_connect"),
    ("BUS INIT: ...ERROR", "bus_init"),
    ("BUFFER FULL", "buffer_full"),
    ("", "empty"),
    ("41 0D", "decode"),
])
def test_error_reply_is_counted_and_the_reader_keeps_running(emu, reply, counter):
    with Running(emu.path) as run:
        emu.inject(reply)
        assert wait_until(lambda: run.reader.stats.errors_by_kind.get(counter) == 1), \
            run.reader.stats
        after = run.more(3)
        assert all(r["speed_kmh"] == 88.0 for r in after[1:])
        assert run.reader.stats.reconnects == 0 and run.reader.stats.timeouts == 0


def test_adapter_that_reset_itself_is_reinitialised(emu):
    with Running(emu.path) as run:
        emu.inject("LV RESET")
        assert wait_until(lambda: run.reader.stats.reconnects == 1), run.reader.stats
        assert run.reader.stats.errors_by_kind.get("adapter_reset") == 1
        assert run.more(2)[-1]["speed_kmh"] == 88.0


def test_vin_request_hit_by_a_bus_error_is_retried_next_cycle(emu):
    r = ObdReader(emu.path, **FAST)
    r.connect()
    emu.inject("SEARCHING...\r41 00 BE 1F A8 12")   # 0100: 04 05 0C 0D 11, no chain bit
    emu.inject("CAN ERROR", times=6)  # 010D 010C 0111 0104 0105, then 0902
    first = r.read_once()
    assert first["vin"] is None and r.stats.errors_by_kind["can_error"] == 6
    assert r.read_once()["vin"] == VIN
    assert len(emu.received("0902")) == 2
    r.close()


def test_no_data_is_counted_and_only_that_field_is_none(emu):
    r = ObdReader(emu.path, **FAST)
    r.read_once()                  # connects, discovers, reads the VIN
    emu.inject("NO DATA")          # the next request: 010D, first of the cycle
    reading = r.read_once()
    assert r.stats.no_data == 1
    assert reading["speed_kmh"] is None
    assert all(reading[k] is not None for k in DRIVING if k != "speed_kmh")
    assert r.read_once()["speed_kmh"] == 88.0
    r.close()


def test_silent_adapter_times_out_and_is_reinitialised(emu):
    with Running(emu.path) as run:
        emu.set_silent(True)
        assert wait_until(lambda: run.reader.stats.timeouts >= 1)
        emu.set_silent(False)
        assert wait_until(lambda: run.reader.stats.reconnects == 1)
        assert run.more(2)[-1]["speed_kmh"] == 88.0
        assert run.reader.stats.connected


def test_unplugged_adapter_is_reconnected_on_the_same_path(emu):
    with Running(emu.path) as run:
        n_atz = len(emu.received("ATZ"))
        emu.drop()
        assert wait_until(lambda: run.reader.stats.errors_by_kind.get("serial", 0) >= 2), \
            run.reader.stats     # the loss, then at least one failed reopen of a missing path
        assert not run.reader.stats.connected
        plugged_at = time.monotonic()
        emu.replug()
        assert wait_until(lambda: run.reader.stats.reconnects == 1), run.reader.stats
        after = run.more(2)
        assert after[-1]["speed_kmh"] == 88.0 and after[-1]["vin"] == VIN
        # the fresh adapter was reset and configured, and asked for the VIN again
        assert n_atz == 1 and len([t for t in emu.received("ATZ") if t > plugged_at]) == 1
        assert len(emu.received("0902")) == 2


def test_ignition_off_backs_off_and_ignition_on_resumes(emu):
    with Running(emu.path, interval_s=0.02) as run:
        emu.set_ignition(False)
        assert wait_until(lambda: run.reader.stats.asleep)
        assert wait_until(lambda: run.reader.current_interval_s == 0.4)  # capped at idle_max_s
        asleep_at = time.monotonic()
        time.sleep(0.9)
        polls = [t for t in emu.received("010D") if t > asleep_at]
        assert len(polls) <= 4        # at 0.02 s it would have been ~40
        # once known asleep, a cycle stops at the first unanswered request
        assert not [t for t in emu.received("010C") if t > asleep_at]
        last = run.readings[-1]
        assert last["rpm"] is None and last["battery_v"] == 12.3   # ATRV, ECU asleep
        assert run.reader.stats.no_data > 0
        emu.set_ignition(True)
        assert wait_until(lambda: not run.reader.stats.asleep, 2.0)
        assert run.more(3)[-1]["rpm"] == 2150.5
        assert run.reader.current_interval_s == 0.02


def test_key_on_engine_off_at_rest_voltage_counts_as_asleep(emu, values):
    values.update(rpm=0.0, speed_kmh=0.0, battery_v=12.4)
    with Running(emu.path) as run:
        assert wait_until(lambda: run.reader.stats.asleep)
        assert run.readings[-1]["battery_v"] == 12.4


def test_ignition_rule():
    assert is_asleep({"rpm": None, "battery_v": 12.4}, ecu_silent=True)
    assert is_asleep({"rpm": 0.0, "battery_v": 12.6}, ecu_silent=False)
    assert not is_asleep({"rpm": 0.0, "battery_v": 13.8}, ecu_silent=False)  # charging
    assert not is_asleep({"rpm": 800.0, "battery_v": 12.2}, ecu_silent=False)  # running
    assert not is_asleep({"rpm": 0.0, "battery_v": None}, ecu_silent=False)


def test_starting_with_ignition_off_discovers_once_the_car_wakes(emu):
    emu.set_ignition(False)
    r = ObdReader(emu.path, **FAST)
    reading = r.read_once()
    assert reading["speed_kmh"] is None and reading["vin"] is None
    assert r.stats.errors_by_kind.get("unable_to_connect") == 1
    assert r.last_ecu_silent and r.supported is None
    emu.set_ignition(True)
    reading = r.read_once()
    assert reading["speed_kmh"] == 88.0 and reading["vin"] == VIN
    r.close()


def test_missing_port_is_a_clear_adapter_error(tmp_path):
    r = ObdReader(str(tmp_path / "nothing"), **FAST)
    with pytest.raises(AdapterGone, match="cannot open OBD adapter port"):
        r.read_once()


def test_run_never_raises_on_a_missing_port(tmp_path):
    r = ObdReader(str(tmp_path / "nothing"), **FAST)
    stop = threading.Event()
    t = threading.Thread(target=r.run, args=(stop, lambda _: None, 0.02), daemon=True)
    t.start()
    assert wait_until(lambda: r.stats.errors_by_kind.get("serial", 0) >= 3)
    stop.set()
    t.join(2)
    assert not t.is_alive()


def test_a_hung_up_tty_is_an_adapter_lost_not_an_unexpected_error(tmp_path):
    """Once the adapter's tty hangs up (unplugged; here a pty's other end closed), flushing its
    input raises termios.error (EIO) from inside pyserial, not a SerialException: the driver
    reports it as AdapterGone, which the reader counts and reconnects from without a traceback."""
    import os
    import pty

    from smartcity.edge.obd.elm327 import Elm327
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    elm = Elm327(path, timeout_s=0.3)
    elm.open()
    try:
        os.close(master)
        with pytest.raises(AdapterGone, match="lost"):
            for _ in range(3):   # the hang-up reaches the slave side at once on Linux; be patient
                elm.send("0100")
    finally:
        elm.close()
