"""Exactly-once file commits that non-Spark readers (Athena, Glue, Redshift Spectrum, pyarrow) can see.

Those readers list folders and read every file not starting with `_` or `.`; they know nothing of
`_spark_metadata`. So a micro-batch is made visible like this:

1. Spark writes the batch into `{lake}/_staging/{query}/{batch}/...` (outside every table folder).
2. The planned moves (staged file -> final name derived from query id + batch id) are written to a
   manifest `{checkpoint}/lake_commits/{batch}.pending.json` in one atomic create-and-rename.
3. Each staged file is renamed into its final partition folder (a single file appears complete:
   local rename(2); on S3 a server-side copy, then the source is deleted).
4. The manifest is renamed to `{batch}.done.json`; staging is deleted.

After a crash Spark re-runs the last uncommitted batch with the same offsets. The writer then:
- finds `done`   -> files are all in place; nothing is written again;
- finds `pending`-> rolls the recorded moves forward (skipping those already done) and finishes;
- finds neither  -> nothing was visible yet: staging is wiped and the batch is written afresh.
A reader can therefore see a batch partly (between 3 and 4 or before a restart) but never a file
twice, never a partial file, and never an orphan that is not also in the manifest.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

HIDDEN = ("_", ".")
_STAGED_DATA = re.compile(r"^data/(?P<topic>[a-z_]+)/(?P<dt>dt=[0-9-]+)/(?P<hour>hour=\d{2})/(?P<name>[^/]+)$")
_STAGED_Q = re.compile(r"^quarantine/q_topic=(?P<topic>[a-z_]+)/(?P<dt>dt=[0-9-]+)/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class Move:
    src: str
    dst: str


def plan_moves(staged_rel: list[str], query_tag: str, batch_id: int) -> list[tuple[str, str]]:
    """Pure: staged relative paths -> (staged, final) relative paths, deterministic for a batch.
    Hidden files (_SUCCESS, .crc) are not moved. Unknown layouts are an error, not a silent drop."""
    out = []
    k = 0
    for rel in sorted(staged_rel):
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(HIDDEN):
            continue
        if not name.endswith(".parquet"):
            raise ValueError(f"unexpected staged file {rel!r}")
        m = _STAGED_DATA.match(rel)
        final = f"part-{query_tag}-b{batch_id:010d}-{k:04d}.snappy.parquet"
        if m:
            out.append((rel, f"data/{m['topic']}/{m['dt']}/{m['hour']}/{final}"))
        else:
            m = _STAGED_Q.match(rel)
            if not m:
                raise ValueError(f"staged file {rel!r} matches no lake layout")
            out.append((rel, f"quarantine/{m['topic']}/{m['dt']}/{final}"))
        k += 1
    return out


@contextlib.contextmanager
def lake_lock(lake: str):
    """Exclusive lock between the stream's file moves and compaction's folder swap (local lakes).
    S3 has no locks; compaction refuses S3 lakes."""
    if not lake.startswith("file://"):
        yield
        return
    d = lake[len("file://"):] + "/_locks"
    os.makedirs(d, exist_ok=True)
    with open(d + "/commit.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class HadoopFS:
    """Small file API over Hadoop FileSystem (py4j), so file:// and s3a:// behave the same and use
    Spark's own s3a configuration and credentials chain."""

    def __init__(self, spark, uri: str):
        jvm = spark._jvm
        self._jvm = jvm
        self._conf = spark._jsc.hadoopConfiguration()
        self.uri = uri.rstrip("/")
        fs = jvm.org.apache.hadoop.fs.Path(self.uri).getFileSystem(self._conf)
        # Local: bypass the checksum layer so renames move only the data file and no .crc appears.
        if fs.getScheme() == "file":
            fs = fs.getRawFileSystem()
        self.fs = fs

    def _p(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._p(path)))

    def delete(self, path: str) -> None:
        self.fs.delete(self._p(path), True)

    def mkdirs(self, path: str) -> None:
        self.fs.mkdirs(self._p(path))

    def list_files(self, path: str) -> list[tuple[str, int]]:
        """(path relative to `path`, size) of every file below it; [] when it does not exist."""
        base = self._p(path)
        if not self.fs.exists(base):
            return []
        root = self.fs.getFileStatus(base).getPath().toString().rstrip("/")
        it = self.fs.listFiles(base, True)
        out = []
        while it.hasNext():
            st = it.next()
            full = st.getPath().toString()
            out.append((full[len(root) + 1:], int(st.getLen())))
        return out

    def list_dir(self, path: str) -> list[str]:
        p = self._p(path)
        if not self.fs.exists(p):
            return []
        return [st.getPath().getName() for st in self.fs.listStatus(p)]

    def rename(self, src: str, dst: str) -> None:
        d = self._p(dst)
        self.fs.mkdirs(d.getParent())
        if self.fs.exists(d):
            self.fs.delete(d, False)
        if not self.fs.rename(self._p(src), d):
            raise OSError(f"rename {src} -> {dst} failed")

    def write_text(self, path: str, text: str) -> None:
        """Atomic: readers see the old file or the whole new one."""
        tmp = path + ".tmp"
        out = self.fs.create(self._p(tmp), True)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()
        self.rename(tmp, path)

    def read_text(self, path: str) -> str:
        stream = self.fs.open(self._p(path))
        try:
            scanner = self._jvm.java.util.Scanner(stream, "UTF-8").useDelimiter("\\A")
            return scanner.next() if scanner.hasNext() else ""
        finally:
            stream.close()


def _fault_point(moves_done: int) -> None:
    """Test hook for the crash tests: SMARTCITY_LAKE_TEST_PAUSE_AFTER_MOVES=N makes the first commit
    that reaches N moves announce itself (a file named by SMARTCITY_LAKE_TEST_PAUSE_FILE) and hang,
    so the test can kill -9 the driver at exactly that point. N=0 pauses once the batch is written
    to staging, before its manifest: nothing of it is visible yet. Unset in production."""
    n = os.environ.get("SMARTCITY_LAKE_TEST_PAUSE_AFTER_MOVES")
    flag = os.environ.get("SMARTCITY_LAKE_TEST_PAUSE_FILE")
    if n and flag and moves_done == int(n) and not os.path.exists(flag):
        with open(flag, "w") as fh:
            fh.write(str(os.getpid()))
        import time
        time.sleep(3600)


class BatchCommitter:
    """Runs steps 2-4 above and the restart cases. `lake_fs` and `log_fs` may be different
    filesystems (e.g. a local checkpoint with an S3 lake); staging must be on the lake's."""

    def __init__(self, lake_fs: HadoopFS, log_fs: HadoopFS, lake: str, log_dir: str, keep: int = 20):
        self.lake_fs, self.log_fs = lake_fs, log_fs
        self.lake, self.log_dir, self.keep = lake.rstrip("/"), log_dir.rstrip("/"), keep

    def _marker(self, batch_id: int, state: str) -> str:
        return f"{self.log_dir}/{batch_id:010d}.{state}.json"

    def state(self, batch_id: int) -> str | None:
        for s in ("done", "pending"):
            if self.log_fs.exists(self._marker(batch_id, s)):
                return s
        return None

    def commit(self, batch_id: int, staging: str, moves: list[tuple[str, str]], info: dict) -> None:
        manifest = {"batch_id": batch_id, "staging": staging,
                    "moves": [[f"{staging}/{s}", f"{self.lake}/{d}"] for s, d in moves], **info}
        _fault_point(0)
        self.log_fs.write_text(self._marker(batch_id, "pending"), json.dumps(manifest))
        self._roll_forward(manifest)

    def resume(self, batch_id: int) -> dict:
        """Finish a batch whose manifest is pending; returns the manifest."""
        manifest = json.loads(self.log_fs.read_text(self._marker(batch_id, "pending")))
        log.warning("lake: rolling a batch forward from its manifest",
                    extra={"batch_id": batch_id, "files": len(manifest["moves"])})
        self._roll_forward(manifest)
        return manifest

    def _roll_forward(self, manifest: dict) -> None:
        with lake_lock(self.lake):
            for i, (src, dst) in enumerate(manifest["moves"]):
                if self.lake_fs.exists(src):
                    self.lake_fs.rename(src, dst)
                elif not self.lake_fs.exists(dst):
                    raise RuntimeError(f"batch {manifest['batch_id']}: neither {src} nor {dst} exists")
                _fault_point(i + 1)
        b = manifest["batch_id"]
        self.log_fs.rename(self._marker(b, "pending"), self._marker(b, "done"))
        self.lake_fs.delete(manifest["staging"])
        self._prune(b)

    def _prune(self, batch_id: int) -> None:
        # Spark only ever re-runs the last batch, so old markers are history; keep a few for humans.
        for name in self.log_fs.list_dir(self.log_dir):
            m = re.match(r"^(\d+)\.done\.json$", name)
            if m and int(m.group(1)) < batch_id - self.keep:
                self.log_fs.delete(f"{self.log_dir}/{name}")

    def done_info(self, batch_id: int) -> dict:
        return json.loads(self.log_fs.read_text(self._marker(batch_id, "done")))
