"""DurableQueue: what goes in stays until acknowledged, seq never repeats or skips."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from smartcity.edge.queue import DurableQueue

ROOT = Path(__file__).resolve().parents[1]


def builder(stream: str, size: int = 0):
    """Payload '{"seq":N}', padded with spaces to `size` bytes when given."""
    return lambda seq: (f"smartcity/v1/dev/{stream}", f'{{"seq":{seq}}}'.encode().ljust(size))


def test_rows_survive_reopen_oldest_first(tmp_path):
    with DurableQueue(tmp_path / "q.db") as q:
        for s in ("gps", "vehicle", "gps"):
            q.append(s, builder(s))
    with DurableQueue(tmp_path / "q.db") as q:
        rows = q.peek(10)
        assert [(r.seq, r.stream) for r in rows] == [(1, "gps"), (2, "vehicle"), (3, "gps")]
        assert rows[1].payload == b'{"seq":2}' and rows[1].topic == "smartcity/v1/dev/vehicle"
        assert q.depth() == 3 and q.bytes() == 3 * len(b'{"seq":1}')


def test_seq_continues_after_reopen_even_when_queue_was_emptied(tmp_path):
    with DurableQueue(tmp_path / "q.db") as q:
        q.append_many([("gps", builder("gps"))] * 5)
        q.ack(r.rowid for r in q.peek(10))
        assert q.depth() == 0
    with DurableQueue(tmp_path / "q.db") as q:
        assert q.append("gps", builder("gps")) == 6


def test_rowids_are_never_reused_so_a_publisher_cursor_cannot_skip_new_rows(tmp_path):
    with DurableQueue(tmp_path / "q.db") as q:
        q.append_many([("gps", builder("gps"))] * 3)
        last = q.peek(10)[-1].rowid
        q.ack(r.rowid for r in q.peek(10))
        q.append("gps", builder("gps"))
        assert [r.seq for r in q.peek(10, after_rowid=last)] == [4]


def test_ack_deletes_only_the_given_rows_and_peek_continues_after_a_rowid(tmp_path):
    with DurableQueue(tmp_path / "q.db") as q:
        q.append_many([("gps", builder("gps"))] * 6)
        rows = q.peek(10)
        assert q.ack([rows[0].rowid, rows[2].rowid, 999_999]) == 2
        assert [r.seq for r in q.peek(10)] == [2, 4, 5, 6]
        assert [r.seq for r in q.peek(2, after_rowid=rows[3].rowid)] == [5, 6]
        assert q.depth() == 4


def test_a_failing_builder_stores_nothing_and_consumes_no_seq(tmp_path):
    def broken(seq):
        raise ValueError("sensor record failed validation")

    with DurableQueue(tmp_path / "q.db") as q:
        q.append("gps", builder("gps"))
        with pytest.raises(ValueError):
            q.append("gps", broken)
        assert q.append("gps", builder("gps")) == 2
        assert q.depth() == 2


def test_drop_oldest_when_over_the_size_bound_is_counted(tmp_path, caplog):
    with DurableQueue(tmp_path / "q.db", max_bytes=1000) as q:
        for _ in range(15):
            q.append("gps", builder("gps", size=100))
        assert q.bytes() <= 1000
        seqs = [r.seq for r in q.peek(100)]
        assert seqs == list(range(6, 16))  # the newest ten survive
        assert q.dropped_total() == 5
    with DurableQueue(tmp_path / "q.db", max_bytes=1000) as q:
        assert q.dropped_total() == 5, "the drop counter is persisted"
    assert any("dropped oldest" in r.message for r in caplog.records)


def test_drop_oldest_by_age_is_counted(tmp_path):
    now = [1_000_000.0]
    with DurableQueue(tmp_path / "q.db", max_age_s=60, clock=lambda: now[0]) as q:
        q.append_many([("gps", builder("gps"))] * 3)
        now[0] += 30
        q.append("weather", builder("weather"))
        assert q.oldest_age_s() == pytest.approx(30)
        now[0] += 45          # the first three are 75 s old now, the fourth 45 s
        q.append("gps", builder("gps"))            # each append applies the bounds
        assert [r.seq for r in q.peek(10)] == [4, 5]
        assert q.dropped_total() == 3


def test_concurrent_appends_from_sensor_threads_get_unique_consecutive_seqs(tmp_path):
    with DurableQueue(tmp_path / "q.db", fsync=False) as q:
        def worker(stream):
            for _ in range(200):
                q.append(stream, builder(stream))

        threads = [threading.Thread(target=worker, args=(s,)) for s in ("gps", "vehicle", "weather")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = q.peek(1000)
        assert sorted(r.seq for r in rows) == list(range(1, 601))
        assert [r.seq for r in rows] == sorted(r.seq for r in rows), "rowid order is seq order"
        assert all(r.payload.startswith(f'{{"seq":{r.seq}}}'.encode()) for r in rows)


CHILD = textwrap.dedent("""
    import sys
    from smartcity.edge.queue import DurableQueue
    q = DurableQueue(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        if i % 3 == 0:
            q.append_many([("gps", lambda s: ("t/gps", str(s).encode()))] * 4)
        else:
            q.append("vehicle", lambda s: ("t/vehicle", str(s).encode()))
""")


def test_kill_9_while_appending_leaves_no_seq_gap_or_duplicate(tmp_path):
    db = tmp_path / "q.db"
    for round_ in range(2):  # kill twice: the second child continues where the first died
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.7)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with DurableQueue(db) as q:
        rows = q.peek(1_000_000)
        seqs = [r.seq for r in rows]
        assert len(seqs) > 50, "the child should have committed plenty of rows"
        assert seqs == list(range(1, len(seqs) + 1)), "no gap, no duplicate, in order"
        assert all(r.payload == str(r.seq).encode() for r in rows)
        assert q.next_seq() == seqs[-1] + 1
        assert q.append("gps", builder("gps")) == seqs[-1] + 1


def test_rejected_rows_are_moved_aside_kept_and_can_be_requeued(tmp_path):
    with DurableQueue(tmp_path / "q.db") as q:
        q.append_many([("gps", builder("gps"))] * 3)
        rows = q.peek(10)
        assert q.reject(rows[1].rowid, "Not authorized")
        assert [r.seq for r in q.peek(10)] == [1, 3]
        assert q.rejected_total() == 1
        [(row, reason)] = q.rejected()
        assert (row.seq, reason) == (2, "Not authorized")
        assert q.requeue_rejected() == 1
        assert [r.seq for r in q.peek(10)] == [1, 3, 2]  # back at the end, seq kept
        assert q.rejected_total() == 0 and q.depth() == 3


def test_a_requeue_by_another_connection_shows_in_the_running_queue(tmp_path):
    """`smartcity-edge queue requeue-rejected` while the agent runs: the agent's counts (depth,
    bytes, the bounds) follow at its next append."""
    with DurableQueue(tmp_path / "q.db", max_bytes=1000) as agent:
        agent.append_many([("gps", builder("gps", size=100))] * 3)
        agent.reject(agent.peek(1)[0].rowid, "Not authorized")
        with DurableQueue(tmp_path / "q.db") as operator:
            assert operator.requeue_rejected() == 1
        agent.append("gps", builder("gps", size=100))
        assert (agent.depth(), agent.bytes(), agent.rejected_bytes()) == (4, 400, 0)
        assert [r.seq for r in agent.peek(10)] == [2, 3, 1, 4]


def queue_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartcity.edge.agent", "queue", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, **(env or {})})


def test_queue_cli_status_and_requeue_rejected(tmp_path):
    import json
    with DurableQueue(tmp_path / "queue.sqlite3") as q:
        q.append_many([("gps", builder("gps")), ("vehicle", builder("vehicle")), ("gps", builder("gps"))])
        q.reject(q.peek(2)[1].rowid, "Not authorized")
    r = queue_cli("status", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert (st["waiting"], st["rejected"], st["next_seq"]) == (2, 1, 4)
    assert [(x["seq"], x["stream"], x["reason"]) for x in st["rejected_oldest"]] == [(2, "vehicle", "Not authorized")]
    r = queue_cli("requeue-rejected", env={"SMARTCITY_EDGE_DATA_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert {k: json.loads(r.stdout)[k] for k in ("requeued", "waiting", "rejected")} == \
        {"requeued": 1, "waiting": 3, "rejected": 0}
    with DurableQueue(tmp_path / "queue.sqlite3") as q:
        assert [r.seq for r in q.peek(10)] == [1, 3, 2]


def test_queue_cli_without_a_queue_is_one_line_and_exit_2(tmp_path):
    r = queue_cli("status", "--data-dir", str(tmp_path / "nothing"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"smartcity-edge queue: --data-dir: no queue at {tmp_path / 'nothing' / 'queue.sqlite3'} " \
                               "(the agent's data_dir holds queue.sqlite3)"
    assert not (tmp_path / "nothing").exists(), "looking does not create a queue"
    r = queue_cli("drop-everything")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


# --- the rejected table is bounded too ------------------------------------------------------------

def test_rejected_rows_count_towards_max_bytes_and_are_evicted_before_waiting_readings(tmp_path):
    with DurableQueue(tmp_path / "q.db", max_bytes=1000) as q:
        q.append_many([("gps", builder("gps", size=100))] * 5)
        rows = q.peek(10)
        q.reject(rows[0].rowid, "Not authorized")
        q.reject(rows[1].rowid, "Not authorized")
        assert (q.bytes(), q.rejected_bytes()) == (300, 200)
        q.append_many([("gps", builder("gps", size=100))] * 6)      # 1100 bytes: 100 too many
        assert [r.seq for r, _ in q.rejected()] == [2], "the oldest rejected row went first"
        assert [r.seq for r in q.peek(100)] == list(range(3, 12))
        q.append_many([("gps", builder("gps", size=100))] * 3)      # 300 too many
        assert q.rejected() == [] and [r.seq for r in q.peek(100)] == list(range(5, 15))
        assert (q.rejected_dropped_total(), q.dropped_total()) == (2, 2)
    with DurableQueue(tmp_path / "q.db", max_bytes=1000) as q:
        assert (q.rejected_dropped_total(), q.dropped_total()) == (2, 2), "both counters persist"


def test_a_broker_that_refuses_every_reading_cannot_fill_the_disk_with_rejected_rows(tmp_path, caplog):
    # e.g. mqtt.username != device_id: every reading comes back "Not authorized".
    with DurableQueue(tmp_path / "q.db", max_bytes=2000, fsync=False) as q:
        for _ in range(500):
            q.append("gps", builder("gps", size=100))
            q.reject(q.peek(1)[0].rowid, "Not authorized")
        assert q.rejected_bytes() <= 2000 and q.rejected_total() == 20
        assert [r.seq for r, _ in q.rejected()] == list(range(481, 501)), "the newest are kept"
        assert q.rejected_dropped_total() == 480
    drops = [r for r in caplog.records if "dropped oldest" in r.message]
    assert len(drops) == 1, "one log line a minute, not one per evicted row"


def test_rejected_rows_expire_with_max_age_like_waiting_ones(tmp_path):
    now = [1_000_000.0]
    with DurableQueue(tmp_path / "q.db", max_age_s=60, clock=lambda: now[0]) as q:
        q.append_many([("gps", builder("gps"))] * 2)
        q.reject(q.peek(1)[0].rowid, "Not authorized")
        now[0] += 61
        q.append("gps", builder("gps"))
        assert q.rejected_total() == 0 and q.rejected_bytes() == 0
        assert (q.dropped_total(), q.rejected_dropped_total()) == (1, 1)
        assert [r.seq for r in q.peek(10)] == [3]


def test_the_size_bound_keeps_emergency_readings_longest(tmp_path):
    with DurableQueue(tmp_path / "q.db", max_bytes=1000) as q:
        q.append_many([("emergency", builder("emergency", size=100))] * 2)
        for _ in range(15):
            q.append("gps", builder("gps", size=100))
        assert [r.seq for r in q.peek(100)] == [1, 2] + list(range(10, 18))
        q.append_many([("emergency", builder("emergency", size=100))] * 11)
        # Nothing but emergency readings left to evict: the oldest of them go.
        assert [r.stream for r in q.peek(100)] == ["emergency"] * 10
        assert q.bytes() <= 1000


# --- disk policy: min_free_bytes --------------------------------------------------------------------

class FakeDisk:
    """statvfs of a filesystem whose free space the test sets; counts the calls."""

    def __init__(self, free: int):
        self.free, self.calls = free, 0

    def __call__(self, path):
        self.calls += 1
        return os.statvfs_result((4096, 4096, 10**6, 0, self.free // 4096, 10**5, 0, 0, 0, 255))


MB = 1024 * 1024


def disk_queue(path, disk, clock, **kw):
    return DurableQueue(path, min_free_bytes=MB, disk_check_s=5.0, statvfs=disk,
                        monotonic=lambda: clock[0], **kw)


def test_free_space_is_checked_at_most_once_per_interval_not_per_append(tmp_path):
    disk, clock = FakeDisk(100 * MB), [0.0]
    with disk_queue(tmp_path / "q.db", disk, clock, fsync=False) as q:
        for _ in range(1000):                 # 10 s at 100 readings a second
            q.append("gps", builder("gps"))
            clock[0] += 0.01
        assert disk.calls == 2                # at 0 s and 5 s
        assert q.disk_free_bytes() == 100 * MB and not q.disk_low


def test_on_a_nearly_full_disk_the_queue_stops_growing_and_old_non_emergency_rows_make_room(
        tmp_path, caplog):
    disk, clock = FakeDisk(100 * MB), [0.0]
    with disk_queue(tmp_path / "q.db", disk, clock) as q:
        q.append("emergency", builder("emergency", size=100))
        q.append_many([("gps", builder("gps", size=100))] * 20)      # seqs 2..21
        q.reject(q.peek(2)[1].rowid, "Not authorized")             # seq 2 set aside
        size = q.bytes() + q.rejected_bytes()
        disk.free = MB // 2                                          # something filled the card
        clock[0] += 5
        for _ in range(10):                                          # seqs 22..31
            assert q.append("gps", builder("gps", size=100)) is not None
        assert q.disk_low
        assert q.bytes() + q.rejected_bytes() == size, "the queue did not grow"
        assert q.rejected() == [], "the rejected row went first"
        assert [r.seq for r in q.peek(100)] == [1] + list(range(12, 32)), \
            "then the oldest gps readings; the emergency reading stays"
        assert q.dropped_total() == 9 and q.rejected_dropped_total() == 1
        assert any("disk nearly full" in r.message for r in caplog.records)
        disk.free = 100 * MB                                         # the operator cleaned up
        clock[0] += 5
        depth = q.depth()
        q.append("gps", builder("gps", size=100))
        assert not q.disk_low and q.depth() == depth + 1, "the queue grows again"


def test_when_only_emergency_readings_are_left_other_readings_are_refused_not_crashed(
        tmp_path, caplog):
    disk, clock = FakeDisk(MB // 2), [0.0]                            # low from the start
    with disk_queue(tmp_path / "q.db", disk, clock) as q:
        assert q.append("emergency", builder("emergency")) == 1     # emergency: always stored
        refused = [q.append("gps", builder("gps")) for _ in range(50)]
        assert refused == [None] * 50
        assert q.append_many([("vehicle", builder("vehicle")), ("emergency", builder("emergency"))]) \
            == [None, 2], "no seq is spent on a refused reading"
        assert q.refused_total() == {"disk_low": 51, "disk_full": 0}
        assert [r.stream for r in q.peek(10)] == ["emergency", "emergency"]
        lines = [r for r in caplog.records if "refusing" in r.message]
        assert len(lines) == 1 and lines[0].levelname == "ERROR", "rate-limited: one line a minute"
        disk.free = 100 * MB
        clock[0] += 5
        assert q.append("gps", builder("gps")) == 3


def test_a_failing_free_space_check_is_logged_and_does_not_stop_appends(tmp_path, caplog):
    def broken(path):
        raise PermissionError("statvfs denied")
    with DurableQueue(tmp_path / "q.db", min_free_bytes=MB, statvfs=broken) as q:
        assert q.append("gps", builder("gps")) == 1
    assert any("free space check failed" in r.message for r in caplog.records)


def test_sqlite_reporting_the_disk_full_makes_room_or_refuses_never_raises(tmp_path, caplog):
    # max_page_count makes SQLite answer SQLITE_FULL exactly like a filesystem without blocks.
    with DurableQueue(tmp_path / "q.db") as q:
        q.append("emergency", builder("emergency", size=200))
        q.append_many([("gps", builder("gps", size=200))] * 400)
        pages = q._db.execute("PRAGMA page_count").fetchone()[0]
        q._db.execute(f"PRAGMA max_page_count={pages}")
        seqs = [q.append("gps", builder("gps", size=200)) for _ in range(200)]
        assert None not in seqs, "old gps readings made room"
        assert q.disk_low and q.dropped_total() > 0
        assert q.peek(1)[0].stream == "emergency"
        q.ack(r.rowid for r in q.peek(10_000) if r.stream != "emergency")
        stored = 0      # emergency readings use the pages the acknowledged ones freed, then...
        while q.append("emergency", builder("emergency", size=200)) is not None:
            stored += 1
            assert stored < 10_000
        assert stored > 300 and q.refused_total() == {"disk_low": 0, "disk_full": 1}, \
            "...one is refused: there is no room to write it"
        assert [q.append("gps", builder("gps", size=200)) for _ in range(20)] == [None] * 20
        assert sum(q.refused_total().values()) == 21
        assert all(r.stream == "emergency" for r in q.peek(10_000)) and q.depth() == stored + 1
    assert any("disk full" in r.message for r in caplog.records)


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 16 MiB filesystem (tmpfs), when this process may mount one (root)."""
    mnt = tmp_path / "sd"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_on_a_real_small_filesystem_the_queue_keeps_free_space_and_the_emergency_reading(tiny_fs):
    with DurableQueue(tiny_fs / "q.db", min_free_bytes=6 * MB, disk_check_s=0.0) as q:
        q.append("emergency", builder("emergency", size=1000))
        for _ in range(1000):        # 20 MB of readings into a 16 MiB filesystem
            assert None not in q.append_many([("gps", builder("gps", size=1000))] * 20)
        st = os.statvfs(tiny_fs)
        assert st.f_bavail * st.f_frsize > 4 * MB, "the queue stopped growing near min_free_bytes"
        assert q.disk_low and q.dropped_total() > 0
        assert q.peek(1)[0].stream == "emergency"
        # Then something else takes every block that is left.
        with open(tiny_fs / "filler", "wb") as fh:
            with pytest.raises(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        results = [q.append("gps", builder("gps", size=1000)) for _ in range(50)]
        results.append(q.append("emergency", builder("emergency", size=1000)))
        refused = q.refused_total()
        assert results.count(None) == refused["disk_low"] + refused["disk_full"]
        assert q.peek(1)[0].stream == "emergency"
        (tiny_fs / "filler").unlink()
        assert q.append("gps", builder("gps", size=1000)) is not None, "stores again with room"


def test_listeners_are_called_after_a_commit_that_added_readings(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    seen = []
    listener = lambda: seen.append(q.peek(100))   # noqa: E731  (runs after the commit)
    q.add_listener(listener)
    q.append("gps", lambda seq: ("t", b"x"))
    assert [len(rows) for rows in seen] == [1]
    q.append_many([("gps", lambda seq: ("t", b"y")), ("gps", lambda seq: ("t", b"z"))])
    assert [len(rows) for rows in seen] == [1, 3]
    rowid = q.peek(1)[0].rowid
    q.reject(rowid, "not authorized")
    assert q.requeue_rejected() == 1 and len(seen) == 3
    q.ack([r.rowid for r in q.peek(100)])
    assert len(seen) == 3                             # deletes do not call
    q.remove_listener(listener)
    q.append("gps", lambda seq: ("t", b"w"))
    assert len(seen) == 3
