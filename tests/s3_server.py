"""A local S3 server (moto) for the tests that read and write object storage through pyarrow's S3 filesystem."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pyarrow.fs as pafs
import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalS3:
    """The running server: a pyarrow filesystem on it and storage URIs that reach it."""

    port: int
    fs: pafs.S3FileSystem

    def uri(self, path: str) -> str:
        """``s3://BUCKET/rest`` on this server, creating the bucket (the first part of ``path``)."""
        self.fs.create_dir(path.split("/")[0])
        return f"s3://{path}?endpoint_override=127.0.0.1:{self.port}&scheme=http&region=us-east-1"


@pytest.fixture
def local_s3(monkeypatch):
    """A moto S3 server on a free port for one test, with the test's credentials in the environment."""
    moto_server = pytest.importorskip("moto.server", reason="moto (a dev dependency) serves S3 locally for this test")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                           access_key="testing", secret_key="testing", allow_bucket_creation=True)
    try:
        yield LocalS3(port, fs)
    finally:
        server.stop()
