"""The lake stream with Iceberg's GlueCatalog against a local Glue API (moto's server), its
warehouse on the local S3 server (S3Proxy) through S3FileIO, read back through pyiceberg's glue
catalog, DuckDB and the local Athena (Trino's Iceberg connector on the same Glue catalog), and
maintained there (`smartcity-lake maintain`). moto accepts a stale VersionId on UpdateTable, so
this proves that the glue catalog works end to end, not that concurrent commits are safe
(docs/lake.md, "Catalogs")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("moto.server")
from confluent_kafka import Producer  # noqa: E402

from deploy.local.kafka import KafkaServer  # noqa: E402
from deploy.local.trino import TrinoServer  # noqa: E402
from tests.support.moto import MotoServer  # noqa: E402
from deploy.local.s3 import REGION, S3Server  # noqa: E402
from smartcity.contracts import example, format_ts  # noqa: E402
from smartcity.catalog.reader import (duckdb_connection, duckdb_s3_secret_sql, load_table,  # noqa: E402
                                      read_table, read_table_duckdb)
from smartcity.catalog.location import S3, Catalog  # noqa: E402
from smartcity.spark_jobs.settings import LakeSettings  # noqa: E402
from tests.support.harness import wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "weather_data"


def test_glue_catalog_on_the_local_glue_api_with_the_warehouse_on_s3proxy(tmp_path, monkeypatch):
    if not S3Server.available():
        pytest.skip("no S3 server: S3Proxy's jar is fetched by deploy/setup.d/36-s3proxy.sh and runs on Java 17")
    now = datetime.now(timezone.utc)
    sent = []
    for k in range(20):
        r = example(TOPIC)
        r.update(event_id=f"glue-dev:0000abcd:{k}", device_id="glue-dev", seq=k,
                 ts=format_ts(now - timedelta(minutes=k)))
        sent.append(r)
    later = [{**r, "event_id": f"glue-dev:0000abcd:{100 + k}", "seq": 100 + k} for k, r in enumerate(sent[:5])]
    with KafkaServer(tmp_path / "kafka") as kafka, S3Server(tmp_path / "s3") as s3, MotoServer(tmp_path) as glue:
        kafka.create_topics(partitions=1)
        p = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
        for r in sent:
            p.produce(TOPIC, json.dumps(r).encode())
        assert p.flush(30) == 0
        s3.client().create_bucket(Bucket="lake")
        for k, v in s3.aws_env().items():      # one AWS chain for S3Proxy (checked) and moto (not)
            monkeypatch.setenv(k, v)
        env = {**s3.aws_env(), "PYTHONPATH": str(ROOT), "SMARTCITY_LAKE_S3__REGION": REGION,
               "SMARTCITY_LAKE_CATALOG__TYPE": "glue", "SMARTCITY_LAKE_CATALOG__GLUE_ENDPOINT": glue.endpoint}
        cmd = [sys.executable, "-m", "smartcity.spark_jobs", "stream", "--lake", "s3a://lake/city",
               "--bootstrap", kafka.bootstrap, "--trigger-s", "1", "--topics", TOPIC,
               "--s3-endpoint", s3.endpoint, "--s3-path-style"]
        log = tmp_path / "glue-run.log"
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=open(log, "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        s = LakeSettings(lake="s3a://lake/city", s3=S3(endpoint=s3.endpoint, path_style=True, region=REGION),
                         catalog=Catalog(type="glue", glue_endpoint=glue.endpoint))

        def ids():
            t = read_table(s, TOPIC, ["event_id", "device_id"])
            return [] if t is None else t.column("event_id").to_pylist()

        try:
            wait_until(lambda: proc.poll() is not None or len(ids()) >= len(sent), 240, f"events in the lake ({log})")
            # A second wave in a later batch: a second data file for maintenance to compact.
            for r in later:
                p.produce(TOPIC, json.dumps(r).encode())
            assert p.flush(30) == 0
            sent += later
            wait_until(lambda: proc.poll() is not None or len(ids()) >= len(sent), 120, f"the second wave ({log})")
            assert proc.poll() is None, f"the job died: {log}\n" + log.read_text(errors="replace")[-3000:]
            time.sleep(3)
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                rc = proc.wait(60)
            finally:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
        out = log.read_text(errors="replace")
        assert rc == 0, out[-3000:]
        assert sorted(ids()) == sorted(r["event_id"] for r in sent)
        # The Glue table points at S3: Glue's database folder under the warehouse, metadata on S3Proxy.
        t = load_table(s, TOPIC)
        assert t.metadata_location.startswith("s3://lake/city/warehouse/smartcity.db/weather_data/metadata/")
        files = [task.file.file_path for task in t.scan().plan_files()]
        assert files and all(f.startswith("s3://lake/city/warehouse/smartcity.db/weather_data/data/") for f in files)
        assert s3.secret_key not in out
        # Maintenance on S3 through the Glue catalog (`smartcity-lake maintain`, its own process):
        # the two files compacted into one per day, snapshots expired, the table's S3 prefix
        # listed for orphans and an old one deleted, manifests regrouped; every row still there once.
        files_before = len(list(load_table(s, TOPIC).scan().plan_files()))
        # An orphan, as a write that died before its commit leaves one: a file in the table's data
        # folder no snapshot references, 4 days old (S3Proxy's filesystem backend dates an object
        # by its file's mtime). maintain deletes it (older than orphan_age_h) and nothing else.
        orphan_key = "city/warehouse/smartcity.db/weather_data/data/orphan-of-a-dead-write.parquet"
        s3.client().put_object(Bucket="lake", Key=orphan_key, Body=b"not referenced")
        (orphan_file,) = [f for f in Path(s3.blob_dir).rglob("orphan-of-a-dead-write.parquet") if f.is_file()]
        four_days_ago = time.time() - 4 * 86400
        os.utime(orphan_file, (four_days_ago, four_days_ago))
        m = subprocess.run([sys.executable, "-m", "smartcity.spark_jobs", "maintain", "--once", "--table", TOPIC,
                            "--lake", "s3a://lake/city", "--s3-endpoint", s3.endpoint, "--s3-path-style"],
                           cwd=ROOT, env={**os.environ, **env, "SMARTCITY_LAKE_MAINTENANCE__MIN_INPUT_FILES": "2"},
                           capture_output=True, text=True, timeout=600)
        said = "\n".join(ln for ln in (m.stdout + m.stderr).splitlines() if not ln.lstrip().startswith("at "))
        assert m.returncode == 0, said[-4000:]
        (result,) = [json.loads(ln) for ln in m.stdout.splitlines() if ln.startswith('{"')]
        assert "error" not in result and result["orphans_removed"] == 1, result
        assert "Contents" not in s3.client().list_objects_v2(Bucket="lake", Prefix=orphan_key)
        days = {r["ts"][:10] for r in sent}
        assert files_before >= 2 and result["rewritten_files"] == files_before, (files_before, result)
        assert len(list(load_table(s, TOPIC).scan().plan_files())) == len(days)
        assert sorted(ids()) == sorted(r["event_id"] for r in sent)
        assert s3.secret_key not in m.stdout + m.stderr
        # The local Athena on the same Glue catalog, the path Athena itself takes: Trino's Iceberg
        # connector asks the Glue API for the table, reads its files from S3Proxy, with the keys
        # from its environment (none in its configuration files).
        trino = TrinoServer(tmp_path / "trino", s, s3_credentials_from_env=True)
        with trino:
            by_trino = [r[0] for r in trino.query(f"SELECT event_id FROM {TOPIC}")]
        assert sorted(by_trino) == sorted(r["event_id"] for r in sent)
        props = (tmp_path / "trino" / "etc" / "catalog" / f"{s.catalog.name}.properties").read_text()
        assert "iceberg.catalog.type=glue" in props and s3.secret_key not in props
        # An analyst's DuckDB on the same lake with no keys in the environment: the credentials
        # come from the AWS SDK's chain (here a profile of a shared credentials file), as boto3's.
        creds = tmp_path / "aws-credentials"
        env = s3.aws_env()
        creds.write_text(f"[analyst]\naws_access_key_id = {env['AWS_ACCESS_KEY_ID']}\n"
                         f"aws_secret_access_key = {env['AWS_SECRET_ACCESS_KEY']}\n")
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
        monkeypatch.setenv("AWS_PROFILE", "analyst")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")   # never ask a metadata service
        assert "credential_chain" in duckdb_s3_secret_sql(s) and env["AWS_SECRET_ACCESS_KEY"] not in duckdb_s3_secret_sql(s)
        con = duckdb_connection(location=s)
        try:
            by_duckdb = read_table_duckdb(s, TOPIC, ["event_id"], con=con).column("event_id").to_pylist()
        finally:
            con.close()
        assert sorted(by_duckdb) == sorted(r["event_id"] for r in sent)
