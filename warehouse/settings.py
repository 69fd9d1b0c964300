"""smartcity-warehouse's settings: where the lake is (catalog.location.LakeLocation: lake, [s3],
[catalog], as the lake job and smartcity-catalog read them) and where the warehouse is.

    target = "postgres"            # postgres (the local stand-in, psycopg) | redshift (Data API)
    schema = "smartcity"           # the warehouse schema of the target and load-state tables
    [postgres]                     # libpq: host/port/database/user, password_file or password
    [redshift]                     # workgroup (Serverless) or cluster_id (provisioned); secret_arn or
                                   # db_user (IAM temporary credentials); iam_role for COPY and Spectrum

Environment: SMARTCITY_WAREHOUSE_* (SMARTCITY_WAREHOUSE_POSTGRES__PASSWORD_FILE, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smartcity.catalog.location import LakeLocation
from smartcity.runtime.postgres import PostgresConnection

TARGETS = ("postgres", "redshift")


# The connection settings are the runtime's (smartcity-query's postgres engine reads them too).
Postgres = PostgresConnection


@dataclass
class Redshift:
    workgroup: str | None = None        # Redshift Serverless
    cluster_id: str | None = None       # provisioned
    database: str = "dev"
    secret_arn: str | None = None       # Secrets Manager secret with the database user's password
    db_user: str | None = None          # provisioned only: temporary credentials through IAM
    iam_role: str | None = None         # the role COPY and Spectrum assume (reads the lake on S3)
    region: str | None = None
    endpoint: str | None = None         # the Data API's endpoint (tests: a local mock); None = AWS
    glue_database: str = "smartcity"    # Spectrum: the Glue database holding the lake's tables
    external_schema: str = "smartcity_lake"
    poll_s: float = 0.5
    statement_timeout_s: float = 3600.0

    def check(self) -> None:
        if bool(self.workgroup) == bool(self.cluster_id):
            raise ValueError("redshift: set exactly one of workgroup (Serverless) and cluster_id (provisioned)")
        if not self.secret_arn and not self.db_user:
            raise ValueError("redshift: set secret_arn (Secrets Manager) or db_user (IAM temporary credentials)")
        if self.workgroup and self.db_user and not self.secret_arn:
            raise ValueError("redshift: Serverless takes secret_arn or the caller's IAM identity, not db_user")


@dataclass
class WarehouseSettings(LakeLocation):
    target: str = "postgres"
    schema: str = "smartcity"
    postgres: Postgres = field(default_factory=Postgres)
    redshift: Redshift = field(default_factory=Redshift)
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.target = self.target.lower()
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {self.target!r}")
