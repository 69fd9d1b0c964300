"""An S3-compatible object store on loopback, for the lake (Iceberg tables, Spark checkpoints) and tests.

    with S3Server(tmp_path / "s3") as s3:
        s3.client().create_bucket(Bucket="lake")        # boto3, configured for this server
        env = {**os.environ, **s3.aws_env()}             # credentials for a child (Spark, pyiceberg)

The server is S3Proxy (org.gaul:s3proxy, Apache-2.0), a Java program: its jar-with-dependencies from
Maven Central, fetched into $SMARTCITY_CACHE/s3proxy by deploy/setup.d/36-s3proxy.sh, run on Java 17
(S3Proxy's minimum). Its jclouds `filesystem` backend keeps every object as a plain file under
{data_dir}/data/{bucket}/{key}, so the data outlives a restart on the same data_dir.

Why 4.1.0 and not 3.0.0: Spark's checkpoint goes through Hadoop's s3a, which represents an empty
folder by a marker object `folder/` and finds it by listing the prefix `folder/`. S3Proxy 3.0.0
lists no such marker (neither backend; `filesystem-nio2` also answers a HEAD of `folder` with 200,
a file to s3a), so a new checkpoint's first write failed (FileNotFoundException /
ParentNotDirectoryException on `_checkpoints/lake-stream`). S3Proxy fixed the marker listings in
gaul/s3proxy#1094 (issue #1093, for hadoop-aws); 4.1.0 lists them as S3 does (tried here).

It checks AWS signatures (V2 and V4) against one access key and secret, generated per server (or
passed in: the local stack keeps its own in credentials.json). They are written only to
{data_dir}/s3proxy.properties, mode 0600, which the server reads: never on a command line, in a log
or in repr().

Clients: boto3 (>= 1.36) and the AWS SDKs add CRC checksums (x-amz-checksum-*, aws-chunked
trailers) to every upload by default. S3Proxy 4.1.0 checks them (a wrong CRC32 or Content-MD5 is
refused with BadDigest; 3.0.0 ignored them), but clients here still compute one only where an
operation requires it (`request_checksum_calculation="when_required"`, the SDKs' behaviour before
2025), the setting that works with every S3-compatible server: `client()` / `s3_client()` for
boto3, and AWS_REQUEST_CHECKSUM_CALCULATION / AWS_RESPONSE_CHECKSUM_VALIDATION in `aws_env()` for
the SDKs of a child process (S3FileIO's; s3a's older SDK does not add them).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

from .process import Process, Service, free_port, http_answers

log = logging.getLogger(__name__)

S3PROXY_VERSION = "4.1.0"   # deploy/setup.d/36-s3proxy.sh reads this line
JAVA17 = "/usr/lib/jvm/java-17-openjdk-amd64"
REGION = "us-east-1"        # S3Proxy ignores the region; the clients' signatures need one
# Small heap (objects are streamed to files, never held whole), C1-only JIT and the serial GC:
# ~1.5 s faster to start on the shared 2 cores than the defaults, fast enough for a local store.
# The status listener keeps logback's own start-up chatter out of the log.
JAVA_OPTIONS = ("-Xmx384m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                "-Dlogback.statusListenerClass=ch.qos.logback.core.status.NopStatusListener")


class S3Error(RuntimeError):
    pass


def _cache() -> Path:
    env = os.environ.get("SMARTCITY_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache"


def s3proxy_jar() -> Path:
    """Where deploy/setup.d/36-s3proxy.sh puts S3Proxy (it may not be there yet)."""
    return _cache() / "s3proxy" / f"s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"


def java_binary() -> str | None:
    """$JAVA_HOME's java, else Java 17's at its Debian path, else `java` on PATH."""
    for home in (os.environ.get("JAVA_HOME"), JAVA17):
        if home and os.access(Path(home) / "bin" / "java", os.X_OK):
            return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def s3_client(endpoint: str, access_key: str, secret_key: str, **config):
    """A boto3 S3 client for an S3Proxy at `endpoint` (path-style addressing, checksums only where
    an operation requires them, REGION). `config`: more botocore Config arguments."""
    import boto3
    from botocore.config import Config
    cfg = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                 response_checksum_validation="when_required", **config)
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name=REGION, config=cfg)


class S3Server(Service):
    stop_timeout_s = 20.0
    kind = "s3proxy"
    match = "s3proxy"       # a piece of the command line that identifies our process (pid checks)

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 start_timeout_s: float = 90.0):
        self.data_dir = Path(data_dir).resolve()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.access_key = access_key or "sc" + secrets.token_hex(9)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.start_timeout_s = start_timeout_s
        self.proc: Process | None = None
        self.last_start_s: float | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"S3Server(kind={self.kind}, endpoint={self.endpoint}, access_key={self.access_key})"

    @staticmethod
    def available() -> bool:
        """True when S3Proxy's jar is in the cache and a java is there to run it."""
        return s3proxy_jar().is_file() and java_binary() is not None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "s3.log"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "s3proxy.properties"

    @property
    def blob_dir(self) -> Path:
        """Where the objects are: {blob_dir}/{bucket}/{key}."""
        return self.data_dir / "data"

    def client(self, **config):
        """A boto3 S3 client for this server with its keys (s3_client)."""
        return s3_client(self.endpoint, self.access_key, self.secret_key, **config)

    def aws_env(self) -> dict[str, str]:
        """AWS_* variables that give a child process (Spark's s3a and S3FileIO, pyiceberg, boto3)
        this server's keys through the standard credential chain."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": REGION, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}

    def _write_properties(self) -> None:
        props = {
            "s3proxy.endpoint": self.endpoint,
            "s3proxy.authorization": "aws-v2-or-v4",
            "s3proxy.identity": self.access_key,
            "s3proxy.credential": self.secret_key,
            # Headers S3Proxy does not know (x-amz-checksum-*, x-amz-sdk-checksum-algorithm, ...)
            # are ignored rather than refused with NotImplemented.
            "s3proxy.ignore-unknown-headers": "true",
            "jclouds.provider": "filesystem",
            "jclouds.filesystem.basedir": str(self.blob_dir),
        }
        for k, v in props.items():
            if "\n" in v or "\\" in v:
                raise S3Error(f"{k}: a line break or backslash cannot go into a properties file")
        fd = os.open(self.properties_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# generated by deploy/local/s3.py at each start; holds the secret (mode 0600)\n")
            fh.writelines(f"{k}={v}\n" for k, v in props.items())
        os.chmod(self.properties_path, 0o600)   # an older file keeps its mode through O_TRUNC

    def _command(self) -> list[str]:
        jar, java = s3proxy_jar(), java_binary()
        if not jar.is_file():
            raise S3Error(f"S3Proxy is not in the cache ({jar}): run deploy/setup.d/36-s3proxy.sh "
                          "(or deploy/setup.sh)")
        if java is None:
            raise S3Error(f"no java for S3Proxy: install Java 17 (apt-get install openjdk-17-jre-headless) "
                          f"or set JAVA_HOME")
        return [java, *JAVA_OPTIONS, "-jar", str(jar), "--properties", str(self.properties_path)]

    def start(self) -> "S3Server":
        if self.running():
            return self
        t0 = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(exist_ok=True)
        cmd = self._command()
        self._write_properties()
        self.proc = Process(self.kind, cmd, self.log_path, cwd=self.data_dir, error=S3Error).start()
        self.wait_ready()
        self.last_start_s = time.monotonic() - t0
        log.info("s3 server started", extra={"kind": self.kind, "endpoint": self.endpoint,
                                             "start_s": round(self.last_start_s, 1)})
        return self

    def wait_ready(self) -> None:
        """Ready = the S3 API answers an HTTP request (any status: 403 without signature is fine)."""
        try:
            self.proc.wait_for(lambda: http_answers(self.endpoint + "/"), f"HTTP answers on {self.endpoint}", self.start_timeout_s, step=0.1)
        except S3Error:
            self.kill()
            raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.local.s3",
                                 description="Run the S3-compatible store on loopback (foreground).")
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--port", type=int)
    a = ap.parse_args(argv)
    srv = S3Server(a.dir, a.port).start()
    creds = a.dir / "s3-credentials.json"
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"endpoint": srv.endpoint, "access_key": srv.access_key, "secret_key": srv.secret_key}, fh)
    print(f"{srv.kind} S3 at {srv.endpoint}; keys in {creds}; Ctrl-C stops", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
