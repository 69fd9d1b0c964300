"""The crash tests' hook: make a process of the lake job stop at a named point of its work, say so,
and wait there, so a test can kill -9 it at exactly that point (or let it go on).

    SMARTCITY_LAKE_TEST_PAUSE_AT=POINT[,POINT...]   where to pause
    SMARTCITY_LAKE_TEST_PAUSE_FILE=/path/flag       how: the point's name is written to this file,
                                                    and the process waits while the file exists

Points: the stream's batch writer (lake.LakeWriter) `before:<table>` (nothing of that table's
part of the batch committed), `after:<table>` (its Iceberg commit done, the batch's later tables
not), `end` (every table committed, Spark's commit log not written); maintenance
(maintenance.maintain_table) `maintain:before-rewrite:<table>` (the table's compaction not begun)
and `maintain:after-rewrite:<table>` (the compaction committed, snapshot expiry not begun).

Each point pauses once per process. A test kills the process while it waits, or deletes the file
to let it go on (to the next point named, which writes the file again). Unset in production: then
a point costs one environment lookup.
"""
from __future__ import annotations

import os
import time

AT_ENV = "SMARTCITY_LAKE_TEST_PAUSE_AT"
FILE_ENV = "SMARTCITY_LAKE_TEST_PAUSE_FILE"
MAX_PAUSE_S = 3600.0

_paused: set[str] = set()


def pause_point(where: str) -> None:
    at, flag = os.environ.get(AT_ENV), os.environ.get(FILE_ENV)
    if not at or not flag or where not in at.split(",") or where in _paused:
        return
    _paused.add(where)
    tmp = f"{flag}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:      # written whole, then renamed: the test never reads half a name
        fh.write(where)
    os.replace(tmp, flag)
    deadline = time.monotonic() + MAX_PAUSE_S
    while os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.1)
