"""A local PostgreSQL on loopback: the warehouse's stand-in for Redshift (warehouse/, docs/warehouse.md).

    with PostgresServer(data_dir) as pg:
        pg.dsn()                 # "host=127.0.0.1 port=N dbname=smartcity user=smartcity password=..."
        pg.env()                 # PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE for a child process

The server is Debian's PostgreSQL 15 (deploy/setup.d/40-postgres.sh installs it; 15 is the first
release with MERGE, which the load uses). Each server is a cluster of its own, made by initdb in
{data_dir}/pgdata on first start and kept across restarts on the same data_dir:

- it listens on 127.0.0.1 only, on a free port (or the one given), and on no Unix socket (no
  /var/run/postgresql to own);
- one role, `smartcity`, the cluster's superuser (initdb's bootstrap user: a throwaway local
  cluster), with a generated password (SCRAM-SHA-256 for every connection, no trust line in
  pg_hba.conf), and a database `smartcity` it owns. The password is given to initdb through a
  0600 file deleted right after, kept by the caller (the stack's credentials.json, mode 0600; the
  foreground command's postgres-credentials.json, mode 0600): never on a command line, in a log or
  in repr().

PostgreSQL refuses to run as root ("root execution of the PostgreSQL server is not permitted").
As root, initdb and the server run as the `postgres` user Debian's package creates (setpriv
--reuid/--regid/--init-groups: no shell, no PAM), pgdata is chowned to it, and every folder above
pgdata must let it through (search permission): a data dir under a 0700 folder of root's (pytest's
/tmp/pytest-of-root) is refused with the folder named.

The server runs in the foreground of its Process (`postgres -D pgdata`, no pg_ctl), so the pid is
the server's own: stop() sends SIGINT (PostgreSQL's fast shutdown: open sessions are rolled back,
then a checkpoint), SIGKILL after the timeout. Ready = a connection to the `smartcity` database
answers (pg_isready).

CLI: python -m deploy.local.postgres --dir DATA [--port N]   (foreground; Ctrl-C stops)
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from .process import Process, Service, free_port, port_open

log = logging.getLogger(__name__)

MIN_VERSION = 15            # MERGE
USER = "smartcity"          # the role (the cluster's superuser) and its database
DATABASE = "smartcity"
RUN_AS = "postgres"         # the OS user the server runs as when we are root (Debian's package)
MATCH = "bin/postgres"      # a piece of the server's command line (the stack's pid checks)
# Settings of a local stand-in: loopback only, no Unix socket, logs to stderr (our log file).
# fsync stays on: the kill -9 tests are about the loader, and a server that lost a committed
# transaction would make them lie.
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "max_connections": "40",
    "shared_buffers": "128MB",
    "max_wal_size": "2GB",          # a 10-million-row load does not checkpoint every few seconds
    "log_destination": "stderr",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "TimeZone": "UTC",
}


class PostgresError(RuntimeError):
    pass


def bin_dir() -> Path:
    """The folder of Debian's PostgreSQL programs (initdb, postgres, pg_isready): $SMARTCITY_PG_BIN,
    else the newest /usr/lib/postgresql/N/bin with N >= MIN_VERSION."""
    env = os.environ.get("SMARTCITY_PG_BIN")
    if env:
        return Path(env)
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        try:
            found.append((int(Path(d).parent.name), Path(d)))
        except ValueError:
            continue
    good = sorted(v for v in found if v[0] >= MIN_VERSION)
    if not good:
        raise PostgresError(f"no PostgreSQL >= {MIN_VERSION} under /usr/lib/postgresql (found "
                            f"{sorted(v for v, _ in found) or 'none'}): run deploy/setup.d/40-postgres.sh")
    return good[-1][1]


def available() -> bool:
    try:
        return (bin_dir() / "postgres").is_file()
    except PostgresError:
        return False


def _unreachable_folder(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first folder above `path` that the user (uid, gids) may not search, else None."""
    for d in reversed(path.parents):
        st = d.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return d
    return None


class PostgresServer(Service):
    stop_timeout_s = 30.0
    kind = "postgres"

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, password: str | None = None,
                 start_timeout_s: float = 60.0):
        self.data_dir = Path(data_dir).resolve()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password = password or secrets.token_urlsafe(24)
        self.start_timeout_s = start_timeout_s
        self.proc: Process | None = None
        self.last_start_s: float | None = None

    def __repr__(self) -> str:  # never show the password
        return f"PostgresServer(endpoint={self.host}:{self.port}, user={USER}, data_dir={self.data_dir})"

    # where ---------------------------------------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def dsn(self, database: str = DATABASE) -> str:
        """A libpq connection string (psycopg.connect(dsn)) with the password: keep it out of logs."""
        return (f"host={self.host} port={self.port} dbname={database} user={USER} "
                f"password={self.password} connect_timeout=10")

    def env(self, database: str = DATABASE) -> dict[str, str]:
        """libpq's variables for a child process (psql, a loader): the password in PGPASSWORD."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": USER,
                "PGPASSWORD": self.password, "PGDATABASE": database}

    # who ---------------------------------------------------------------------------------------
    @staticmethod
    def _run_as() -> pwd.struct_passwd | None:
        """The OS user for initdb and the server: None (ourselves) unless we are root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PostgresError(f"PostgreSQL refuses to run as root and there is no {RUN_AS!r} user "
                                "to run it as: install Debian's postgresql package "
                                "(deploy/setup.d/40-postgres.sh creates it)") from None

    def _as_user(self, cmd: list[str]) -> list[str]:
        user = self._run_as()
        if user is None:
            return cmd
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *cmd]

    def _check_reachable(self) -> None:
        user = self._run_as()
        if user is None:
            return
        gids = {user.pw_gid} | {g for g in os.getgrouplist(user.pw_name, user.pw_gid)}
        bad = _unreachable_folder(self.pgdata, user.pw_uid, gids)
        if bad is not None:
            raise PostgresError(
                f"PostgreSQL runs as {RUN_AS} (it refuses root) and may not enter {bad} "
                f"(mode {stat.S_IMODE(bad.stat().st_mode):04o}): put the data dir where {RUN_AS} can "
                f"reach it, or allow it through (chmod o+x {bad})")

    def _chown(self, path: Path) -> None:
        user = self._run_as()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    # start ---------------------------------------------------------------------------------------
    def _initdb(self) -> None:
        pwfile = self.data_dir / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password + "\n")
        self._chown(pwfile)
        self.pgdata.mkdir(mode=0o700)
        self._chown(self.pgdata)
        try:
            cmd = self._as_user([str(bin_dir() / "initdb"), "-D", str(self.pgdata), "-U", USER,
                                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                                 "--locale=C", "--no-instructions"])
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        finally:
            pwfile.unlink(missing_ok=True)
        if p.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)   # a half-made cluster would not start
            raise PostgresError(f"initdb failed (rc={p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}")
        log.info("postgres cluster created", extra={"pgdata": str(self.pgdata)})

    def _command(self) -> list[str]:
        opts = {**SERVER_OPTIONS, "port": str(self.port)}
        args = [str(bin_dir() / "postgres"), "-D", str(self.pgdata)]
        for k, v in opts.items():
            args += ["-c", f"{k}={v}"]
        return self._as_user(args)

    def start(self) -> "PostgresServer":
        if self.running():
            return self
        t0 = time.monotonic()
        if port_open(self.port):
            raise PostgresError(f"port {self.port} on {self.host} is taken by another process")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        existed = (self.pgdata / "PG_VERSION").is_file()
        if not existed:
            self._initdb()
        cmd = self._command()
        self.proc = Process(self.kind, cmd, self.log_path, cwd=self.data_dir, error=PostgresError).start()
        try:
            self.proc.wait_for(self._accepting, f"PostgreSQL accepting connections on {self.endpoint}",
                               self.start_timeout_s, step=0.1)
            self._ensure_database()
        except PostgresError as e:
            self.kill()
            if existed and "password authentication failed" in str(e):
                raise PostgresError(f"the cluster in {self.pgdata} was made with another password: pass "
                                    "that one (the stack's credentials.json, postgres-credentials.json) or "
                                    f"remove {self.pgdata} to start afresh") from None
            raise
        except BaseException:
            self.kill()
            raise
        self.last_start_s = time.monotonic() - t0
        log.info("postgres started", extra={"endpoint": self.endpoint, "start_s": round(self.last_start_s, 1)})
        return self

    def _accepting(self) -> bool:
        p = subprocess.run([str(bin_dir() / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port),
                            "-d", "postgres", "-U", USER], capture_output=True, timeout=10)
        return p.returncode == 0

    def _psql(self, sql: str, database: str = "postgres") -> str:
        p = subprocess.run([str(bin_dir() / "psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, **self.env(database)})
        if p.returncode != 0:
            raise PostgresError(f"psql failed: {p.stderr.strip()[-1000:]}")
        return p.stdout

    def _ensure_database(self) -> None:
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'").strip() != "1":
            self._psql(f"CREATE DATABASE {DATABASE} OWNER {USER}")

    def query(self, sql: str, database: str = DATABASE) -> list[list[str]]:
        """Run SQL with psql (tests, the stack's status); rows of text, fields split on '|'."""
        return [line.split("|") for line in self._psql(sql, database).splitlines() if line]

    # stop ----------------------------------------------------------------------------------------
    def stop(self, timeout_s: float | None = None) -> None:
        """SIGINT: PostgreSQL's fast shutdown (sessions rolled back, a checkpoint); SIGKILL after
        the timeout."""
        try:
            if self.proc is not None:
                self.proc.terminate(timeout_s or self.stop_timeout_s, sig=signal.SIGINT)
        finally:
            self.proc = None


def write_credentials(path: Path, server: PostgresServer) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": server.host, "port": server.port, "user": USER, "database": DATABASE,
                   "password": server.password}, fh)
    os.chmod(path, 0o600)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.local.postgres",
                                 description="Run PostgreSQL (the warehouse's local stand-in) on loopback (foreground).")
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--port", type=int)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    creds = a.dir.resolve() / "postgres-credentials.json"
    password = None
    if creds.is_file():   # the cluster keeps the password it was made with
        password = json.loads(creds.read_text()).get("password")
    srv = PostgresServer(a.dir, a.port, password=password)

    def _exit(signum, _frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    try:
        srv.start()
        write_credentials(creds, srv)
        print(f"postgres at {srv.endpoint} (user {USER}, database {DATABASE}); password in {creds}; "
              "Ctrl-C stops", flush=True)
        signal.pause()
    except PostgresError as e:
        print(f"postgres: {e}", file=sys.stderr)
        return 1
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
