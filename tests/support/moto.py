"""moto's server on loopback: a local stand-in for the AWS APIs it mocks (CloudFormation, S3, IAM,
Glue, Athena, ...), all on one port. State lives in memory and is gone when it stops; it takes any
credentials.

    with MotoServer(tmp_path) as moto:
        env = moto.aws_env()          # endpoint, dummy keys, region; nothing can reach AWS
        boto3.client("s3", **moto.client_kwargs())

aws_env() is what a test puts in os.environ (or a child's environment) so that no client, even
one created without an endpoint, talks to AWS: AWS_ENDPOINT_URL (botocore's global endpoint),
dummy keys, no profile or config file, and a proxy that refuses everything except loopback.
"""
from __future__ import annotations

import sys
from pathlib import Path

from deploy.local.process import Process, free_port, http_answers

REGION = "us-east-1"
ACCOUNT = "123456789012"        # moto's default account
# Every variable of the AWS chain that could point a client at a real account or identity.
AWS_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
            "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_REGION")


class MotoServer:
    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = Process("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                     "-p", str(self.port)], Path(data_dir) / "moto.log")

    def __enter__(self) -> "MotoServer":
        self.proc.start()
        self.proc.wait_for(lambda: http_answers(self.endpoint + "/moto-api/"), f"moto on {self.endpoint}",
                           60, step=0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate(20)

    def aws_env(self) -> dict[str, str]:
        """Environment for boto3 (here or in a child) that reaches this server and nothing else.
        Unset the names in AWS_VARS as well (monkeypatch.delenv)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            # A request to anything but loopback goes to a proxy that is not there and fails.
            "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def client(self, service: str):
        import boto3
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def reset(self) -> None:
        """Forget every resource (moto's own API)."""
        import urllib.request
        urllib.request.urlopen(urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST"),
                               timeout=10).read()
