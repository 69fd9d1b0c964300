"""GpsReader on a real pseudo-terminal: bytes in through the tty layer, fixes out, and the
device vanishing and coming back (as a re-plugged USB receiver does)."""
import os
import threading
import time
import tty
from datetime import datetime, timedelta, timezone

import pytest

from smartcity.edge.gps.reader import GpsReader, GpsStats
from smartcity.sim.nmea import nmea_cycle

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


class Pty:
    def __init__(self):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)   # the reader opens the slave by path, like a real /dev/ttyUSB0

    def write_cycle(self, i: int) -> None:
        os.write(self.master, nmea_cycle(T0 + timedelta(seconds=i * 0.1), 48.1 + i * 1e-5, 11.5,
                                         520.0, 36.0, 90.0, 8, 0.9))

    def close(self):
        os.close(self.master)


def wait_for(cond, feed, timeout=10.0):
    """Keep the 'receiver' sending 10 Hz cycles until cond() holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        feed()
        if cond():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def reader_on(tmp_path):
    started = []

    def start(path):
        fixes: list = []
        r = GpsReader(str(path), 9600, fixes.append, stats=GpsStats())
        stop = threading.Event()
        t = threading.Thread(target=r.run, args=(stop,), daemon=True)
        t.start()
        started.append((stop, t))
        return r, fixes

    yield start
    for stop, t in started:
        stop.set()
        t.join(5)
        assert not t.is_alive(), "reader did not stop"


def test_reader_delivers_fixes_from_a_pty_and_survives_unplug_and_replug(tmp_path, reader_on):
    link = tmp_path / "gps0"
    a = Pty()
    os.symlink(a.path, link)
    r, fixes = reader_on(link)
    n = iter(range(10_000))
    assert wait_for(lambda: len(fixes) >= 3, lambda: a.write_cycle(next(n)))
    assert fixes[-1].fix_mode == 3 and fixes[-1].ts.year == 2026
    assert r.stats.connected and r.last_fix_monotonic is not None

    # unplug: the device node disappears and the tty hangs up
    os.unlink(link)
    a.close()
    assert wait_for(lambda: not r.stats.connected, lambda: None, timeout=5)
    before = len(fixes)
    time.sleep(0.5)   # retries against a missing path must not crash or deliver anything
    assert len(fixes) == before

    # replug: a new device appears under the same name
    b = Pty()
    os.symlink(b.path, link)
    assert wait_for(lambda: len(fixes) >= before + 3, lambda: b.write_cycle(next(n)))
    assert r.stats.reopen_count == 1
    assert r.stats.sentences_ok > 0 and r.stats.checksum_errors == 0
    b.close()


def test_reader_reopens_when_the_path_points_to_another_device(tmp_path, reader_on):
    link = tmp_path / "gps0"
    a, b = Pty(), Pty()
    os.symlink(a.path, link)
    r, fixes = reader_on(link)
    n = iter(range(10_000))
    assert wait_for(lambda: len(fixes) >= 2, lambda: a.write_cycle(next(n)))
    # re-plugged so fast that the old tty is still open: only the path tells
    os.unlink(link)
    os.symlink(b.path, link)
    assert wait_for(lambda: r.stats.reopen_count == 1, lambda: a.write_cycle(next(n)), timeout=5)
    k = len(fixes)
    assert wait_for(lambda: len(fixes) >= k + 2, lambda: b.write_cycle(next(n)))
    a.close()
    b.close()


def test_reader_waits_for_a_port_that_does_not_exist_yet(tmp_path, reader_on):
    link = tmp_path / "gps0"
    r, fixes = reader_on(link)
    time.sleep(0.4)
    assert not r.stats.connected and fixes == []
    a = Pty()
    os.symlink(a.path, link)
    n = iter(range(10_000))
    assert wait_for(lambda: len(fixes) >= 2, lambda: a.write_cycle(next(n)))
    assert r.stats.reopen_count == 0
    a.close()


def test_garbage_on_the_line_is_counted_and_does_not_stop_fixes(tmp_path, reader_on):
    a = Pty()
    r, fixes = reader_on(a.path)
    n = iter(range(10_000))

    def noisy():
        os.write(a.master, b"\xff\xfe\x00binary\r\n$GPGGA,bad*00\r\n")
        a.write_cycle(next(n))
    assert wait_for(lambda: len(fixes) >= 3, noisy)
    assert r.stats.garbage_lines > 0 and r.stats.checksum_errors > 0
    a.close()


def test_callback_exception_is_counted_not_fatal(tmp_path):
    calls = []

    def bad(fix):
        calls.append(fix)
        raise RuntimeError("consumer bug")
    r = GpsReader("/nonexistent", 9600, bad)
    data = b"".join(nmea_cycle(T0 + timedelta(seconds=i), 1.0, 2.0, 3.0, 4.0, 5.0, 6, 1.0)
                    for i in range(3))
    # cycle 0 (RMC, GGA, ...) is reported at its RMC and again at its GGA (no end of cycle
    # known yet); cycle 1 teaches GGA as the end of cycle: cycles 1 and 2 are reported there
    assert r.process(data) == 4
    assert r.stats.callback_errors == 4 and len(calls) == 4 and r.stats.fixes == 4


@pytest.mark.parametrize("baud", [1200, 2400, 230400, 9601])
def test_unsupported_baud_rate_is_refused(baud):
    with pytest.raises(ValueError, match="baud"):
        GpsReader("/dev/ttyUSB0", baud, lambda f: None)


def test_supported_baud_rates_are_accepted():
    for baud in (4800, 9600, 19200, 38400, 57600, 115200):
        assert GpsReader("/dev/ttyUSB0", baud, lambda f: None).baud == baud


def test_the_fixes_of_one_gathered_read_are_delivered_in_one_batch(tmp_path):
    """Cycles that arrive within gather_s are read, parsed and delivered together, inside one
    batch() (the agent's: one queue transaction for all of them)."""
    from contextlib import contextmanager
    a = Pty()
    batches: list[list] = []
    current: list = []

    @contextmanager
    def batch():
        current.clear()
        yield
        if current:
            batches.append(list(current))
    r = GpsReader(a.path, 9600, current.append, stats=GpsStats(), gather_s=0.2, batch=batch)
    stop = threading.Event()
    t = threading.Thread(target=r.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert wait_for(lambda: r.stats.connected, lambda: None)
        for i in range(4):         # 4 cycles within the 0.2 s gather: one read
            a.write_cycle(i)
            time.sleep(0.01)
        assert wait_for(lambda: batches, lambda: None, timeout=5)
        assert len(batches[0]) >= 2, batches
    finally:
        stop.set()
        t.join(5)
        a.close()
