"""The PostgreSQL connection settings the services share (the warehouse load writes through them,
smartcity-query's postgres engine reads through them): libpq's keywords, the password from a file
(or libpq's own PGPASSWORD / ~/.pgpass), never on a command line or in a log.

Nothing here imports psycopg until connect() runs: the module costs nothing where it is not
installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .settings import read_secret

if TYPE_CHECKING:
    import psycopg


@dataclass
class PostgresConnection:
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "smartcity"
    user: str = "smartcity"
    password: str | None = None         # prefer password_file (or libpq's PGPASSWORD / ~/.pgpass)
    password_file: Path | None = None
    connect_timeout_s: int = 10
    sslmode: str | None = None          # libpq's: disable | require | verify-full ...

    def conninfo(self) -> str:
        """libpq keywords; the password (read now from password_file) is passed separately."""
        parts = {"host": self.host, "port": str(self.port), "dbname": self.database, "user": self.user,
                 "connect_timeout": str(self.connect_timeout_s)}
        if self.sslmode:
            parts["sslmode"] = self.sslmode
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def secret(self) -> str | None:
        return read_secret(self.password_file, self.password, "postgres.password_file")


def connect(conninfo: str, password: str | None, session: Iterable[str] = ()) -> "psycopg.Connection":
    """An autocommit psycopg connection (transactions are explicit) with `session` statements run
    first (time zone, timeouts); closed again if one of them fails."""
    import psycopg
    kw = {"password": password} if password else {}
    conn = psycopg.connect(conninfo, autocommit=True, **kw)
    try:
        for stmt in session:
            conn.execute(stmt)
    except BaseException:
        conn.close()
        raise
    return conn
