"""The local S3-compatible store answers the S3 API on loopback with the session's keys."""
from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from deploy.local.s3 import S3Server


@pytest.fixture(scope="module")
def s3server(tmp_path_factory):
    srv = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield srv
    srv.stop()


def client(srv):
    return boto3.client("s3", endpoint_url=srv.endpoint, aws_access_key_id=srv.access_key,
                        aws_secret_access_key=srv.secret_key, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_put_then_get_returns_the_same_bytes(s3server):
    s3 = client(s3server)
    s3.create_bucket(Bucket="lake")
    body = b"PAR1" + bytes(range(256)) * 40
    s3.put_object(Bucket="lake", Key="gps_data/date=2026-11-28/part-0.parquet", Body=body)
    assert s3.get_object(Bucket="lake", Key="gps_data/date=2026-11-28/part-0.parquet")["Body"].read() == body
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="gps_data/")["Contents"]]
    assert keys == ["gps_data/date=2026-11-28/part-0.parquet"]


def test_endpoint_is_loopback_and_keys_are_per_server_and_not_shown(tmp_path, s3server):
    assert s3server.endpoint.startswith("http://127.0.0.1:")
    other = S3Server(tmp_path / "other")
    assert (other.access_key, other.secret_key) != (s3server.access_key, s3server.secret_key)
    assert s3server.secret_key not in repr(s3server)
    assert s3server.secret_key not in s3server.log_tail(1000)


def test_missing_object_is_a_clean_s3_error(s3server):
    s3 = client(s3server)
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="lake", Key="nope")
