"""The local S3-compatible store (S3Proxy) answers the S3 API on loopback with the session's keys,
refuses others, and keeps its objects across a restart."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from deploy.local.s3 import S3Server

pytestmark = pytest.mark.skipif(not S3Server.available(), reason="no S3 server: S3Proxy's jar is fetched by "
                                "deploy/setup.d/36-s3proxy.sh and runs on Java 17")


@pytest.fixture(scope="module")
def s3server(tmp_path_factory):
    srv = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield srv
    srv.stop()


def test_put_then_get_returns_the_same_bytes(s3server):
    s3 = s3server.client()
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
    # The keys reach the server only through its properties file, readable by its owner alone.
    assert stat.S_IMODE(os.stat(s3server.properties_path).st_mode) == 0o600
    cmdline = Path(f"/proc/{s3server.proc.pid}/cmdline").read_bytes()
    assert s3server.secret_key.encode() not in cmdline and s3server.access_key.encode() not in cmdline


def test_other_keys_are_refused(s3server):
    from deploy.local.s3 import s3_client
    wrong = s3_client(s3server.endpoint, s3server.access_key, "not-the-secret", retries={"max_attempts": 1})
    with pytest.raises(ClientError) as e:
        wrong.list_buckets()
    assert e.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")


def test_missing_object_is_a_clean_s3_error(s3server):
    s3 = s3server.client()
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="lake", Key="nope")


def test_objects_outlive_a_restart_on_the_same_folder(tmp_path):
    with S3Server(tmp_path / "s3") as srv:
        srv.client().create_bucket(Bucket="keep")
        srv.client().put_object(Bucket="keep", Key="a/b/c.bin", Body=b"still here")
    assert (tmp_path / "s3" / "data" / "keep" / "a" / "b" / "c.bin").read_bytes() == b"still here"
    with S3Server(tmp_path / "s3") as srv:   # new keys, same folder
        assert srv.client().get_object(Bucket="keep", Key="a/b/c.bin")["Body"].read() == b"still here"


def test_an_empty_folder_marker_lists_as_s3_does(s3server):
    """Hadoop's s3a finds an empty folder by its marker `folder/` in a listing of that prefix (the
    stream's checkpoint folders start empty): S3Proxy 3.0.0 listed nothing there."""
    s3 = s3server.client()
    s3.put_object(Bucket="lake", Key="ckpt/offsets/", Body=b"")
    listed = s3.list_objects_v2(Bucket="lake", Prefix="ckpt/offsets/", Delimiter="/", MaxKeys=2)
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [("ckpt/offsets/", 0)]
    with pytest.raises(ClientError):   # the folder's name without the slash is no object
        s3.head_object(Bucket="lake", Key="ckpt/offsets")
