"""Shared fixtures: isolated storage, real data sets, and real service processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def real_data_dir() -> Path:
    """The real public data sets (``$CHURN_REAL_DATA_DIR``, default ../shared/data)."""
    return Path(os.environ.get("CHURN_REAL_DATA_DIR") or REPO.parent / "shared" / "data").resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers (any HTTP status) or fail."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except Exception as e:  # connection refused while starting
            last = e
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own storage root and no stray CHURN_* settings."""
    for key in list(os.environ):
        if key.startswith("CHURN_") and key != "CHURN_REAL_DATA_DIR":
            monkeypatch.delenv(key, raising=False)
    storage = tmp_path / "storage"
    monkeypatch.setenv("CHURN_STORAGE_URL", str(storage))
    monkeypatch.setenv("CHURN_REAL_DATA_DIR", str(real_data_dir()))
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    return storage


@pytest.fixture
def real_data() -> Path:
    """The real data folder; tests using it are skipped when it is absent."""
    d = real_data_dir()
    if not (d / "telco_customer_churn.csv").exists():
        pytest.skip(f"real data sets not found in {d} (set CHURN_REAL_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def moto_server():
    """A real S3-compatible HTTP server (moto_server) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_env(moto_server: str, monkeypatch: pytest.MonkeyPatch):
    """Credentials and endpoint for the moto server; returns a boto3 client factory."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("CHURN_S3_ENDPOINT_URL", moto_server)

    def client():
        return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")

    return client
