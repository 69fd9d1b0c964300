"""Settings of the lake job: dataclass defaults < TOML file < SMARTCITY_LAKE_* environment < flags
(loaded with edge.settings, e.g. SMARTCITY_LAKE_TRIGGER_S=2, SMARTCITY_LAKE_S3__ENDPOINT=...).

Credentials are deliberately not settings: s3a takes them from the standard AWS provider chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, instance role), never from code or a file here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from contracts import RECORD_TYPES

ENV_PREFIX = "SMARTCITY_LAKE_"


@dataclass
class S3:
    endpoint: str | None = None      # e.g. http://127.0.0.1:9000 for an S3-compatible server
    path_style: bool = False         # True for most S3-compatible servers (no bucket DNS names)
    region: str | None = None
    expect_continue: bool = False    # True is AWS's default; off works with every local server


@dataclass
class LakeSettings:
    bootstrap: str = "127.0.0.1:9092"
    topics: list[str] = field(default_factory=lambda: [rt.name for rt in RECORD_TYPES])
    lake: str = "lake"               # folder or URI (file:///..., s3a://bucket/prefix)
    # Default {lake}/_checkpoints/lake-stream: next to the data it describes, on the same durable
    # storage, so a restart anywhere (another host, spark://) resumes exactly where the lake is.
    checkpoint: str | None = None
    master: str = "local[2]"
    trigger_s: float = 5.0
    max_offsets_per_trigger: int | None = 500_000
    starting_offsets: str = "earliest"
    fail_on_data_loss: bool = True
    # Duplicate event_ids are dropped when the copy arrives within this window (ingest time).
    dedup_window_s: int = 3600
    # Event times further than this ahead of the ingest time go to quarantine (future_ts).
    future_tolerance_s: int = 300
    target_rows_per_file: int = 1_000_000
    state_store: str = "hdfs"        # hdfs | rocksdb (see session.STATE_STORES)
    shuffle_partitions: int = 2
    driver_memory: str = "1g"
    ui: bool = False
    spark_log_level: str = "ERROR"
    jars_dir: str | None = None      # default $SMARTCITY_CACHE/spark-jars
    s3: S3 = field(default_factory=S3)

    def __post_init__(self) -> None:
        unknown = set(self.topics) - {rt.name for rt in RECORD_TYPES}
        if unknown:
            raise ValueError(f"unknown topics {sorted(unknown)}; known: {[r.name for r in RECORD_TYPES]}")
        self.lake = to_uri(self.lake)
        self.checkpoint = to_uri(self.checkpoint) if self.checkpoint else join(self.lake, "_checkpoints", "lake-stream")
        if self.state_store not in ("hdfs", "rocksdb"):
            raise ValueError(f"state_store must be hdfs or rocksdb, not {self.state_store!r}")
        if self.trigger_s <= 0:
            raise ValueError("trigger_s must be > 0")


def to_uri(path: str | os.PathLike) -> str:
    """Plain paths become absolute file: URIs, so Spark never resolves them against a cwd."""
    s = str(path)
    if "://" in s:
        return s.rstrip("/")
    if s.startswith("file:"):
        s = s[len("file:"):]
    return "file://" + str(Path(s).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def load(toml_path: str | None = None, overrides: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> LakeSettings:
    from edge.settings import load as _load
    return _load(LakeSettings, toml_path, ENV_PREFIX, overrides, environ)
