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

from edge.queue import DurableQueue

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
        assert q.enforce_bounds() == {"age": 3}
        assert [r.seq for r in q.peek(10)] == [4]
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
    from edge.queue import DurableQueue
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
