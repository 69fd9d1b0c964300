"""An S3-compatible object store on loopback, for the lake (Parquet) and tests.

    with S3Server(tmp_path / "s3") as s3:
        boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                     aws_secret_access_key=s3.secret_key, region_name="us-east-1")

Backends, first available wins:
- SeaweedFS (`weed server -s3`), when a `weed` binary is at $SMARTCITY_CACHE/bin/weed (none of
  deploy/setup.d builds it: too heavy for CI, docs/bridge.md "Local stack"). Apache-2.0; it checks
  signatures against the access key and secret generated here.
- moto's server (`moto[server]`, a pip package), only when weed is missing: it accepts any
  credentials, so it is fine for tests and the demo but not a place to keep data.

The access key and secret are generated per server (or passed in), exposed as attributes and in
the credentials file of the local stack; they are never logged nor put on a command line.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .process import Process, Service, free_port

log = logging.getLogger(__name__)


class S3Error(RuntimeError):
    pass


def _cache() -> Path:
    env = os.environ.get("SMARTCITY_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache"


def weed_binary() -> str | None:
    p = _cache() / "bin" / "weed"
    return str(p) if os.access(p, os.X_OK) else None


def moto_available() -> bool:
    try:
        import moto.server  # noqa: F401
        return True
    except ImportError:
        return False


class S3Server(Service):
    stop_timeout_s = 20.0

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 backend: str | None = None, start_timeout_s: float = 60.0):
        self.data_dir = Path(data_dir).resolve()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.access_key = access_key or "sc" + secrets.token_hex(9)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.kind = backend or ("seaweedfs" if weed_binary() else "moto" if moto_available() else None)
        if self.kind is None:
            raise S3Error("no S3 server available: pip install 'moto[server]' (the dev extra; "
                          "deploy/setup.sh installs it) or put a SeaweedFS `weed` binary at "
                          f"{_cache() / 'bin' / 'weed'}")
        self.start_timeout_s = start_timeout_s
        self.proc: Process | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"S3Server(kind={self.kind}, endpoint={self.endpoint}, access_key={self.access_key})"

    @staticmethod
    def available() -> bool:
        return bool(weed_binary() or moto_available())

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "s3.log"

    @property
    def match(self) -> str:
        """A piece of the command line that identifies our process (for pid checks)."""
        return "weed" if self.kind == "seaweedfs" else "moto.server"

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if self.kind == "seaweedfs":
            cfg = self.data_dir / "s3.json"
            fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"identities": [{
                    "name": "smartcity",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, fh)
            ports = {name: free_port() for name in ("master", "volume", "filer")}
            grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
            cmd = [weed_binary(), "server", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1",
                   "-ip.bind=127.0.0.1", f"-master.port={ports['master']}",
                   f"-master.port.grpc={grpc['master']}", f"-volume.port={ports['volume']}",
                   f"-volume.port.grpc={grpc['volume']}", f"-filer.port={ports['filer']}",
                   f"-filer.port.grpc={grpc['filer']}", "-s3", f"-s3.port={self.port}",
                   f"-s3.port.grpc={grpc['s3']}", f"-s3.config={cfg}", "-master.volumeSizeLimitMB=64",
                   "-volume.max=0"]
            return cmd, env
        # moto keeps everything in memory; it ignores the keys (documented above).
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)], env

    def start(self) -> "S3Server":
        if self.running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "data").mkdir(exist_ok=True)
        cmd, env = self._command()
        self.proc = Process(self.kind, cmd, self.log_path, env=env, cwd=self.data_dir, error=S3Error).start()
        self.wait_ready()
        log.info("s3 server started", extra={"kind": self.kind, "endpoint": self.endpoint})
        return self

    def wait_ready(self) -> None:
        """Ready = the S3 API answers an HTTP request (any status: 403 without signature is fine)."""
        def answers() -> bool:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
            except urllib.error.HTTPError:
                pass
            except OSError:
                return False
            return True
        try:
            self.proc.wait_for(answers, f"HTTP answers on {self.endpoint}", self.start_timeout_s, step=0.2)
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
