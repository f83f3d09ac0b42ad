"""`churn dev` runs a real `dagster dev` (webserver + daemon): the graph loads, a job run
launched over GraphQL succeeds, and SIGTERM stops every process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, free_port, wait_http
from tests.data.test_bad_input import setup_landing

pytestmark = pytest.mark.integration


@pytest.fixture
def dagster_dev(isolated_env: Path, tmp_path: Path):
    config = setup_landing(isolated_env, tmp_path)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "CHURN_DATASET": config}
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "churn"), "dev", "--port", str(port), "--no-seed"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/server_info", timeout=90)
        yield port, proc, tmp_path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _asset_keys(client) -> set[str]:
    data = client._execute("{ assetNodes { assetKey { path } } }")
    return {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]}


def test_dev_serves_graph_runs_job_and_stops(dagster_dev, isolated_env):
    from dagster_graphql import DagsterGraphQLClient

    port, proc, tmp_path = dagster_dev
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    assert {"raw_customers", "raw_transactions", "customer_features"} <= _asset_keys(client)

    run_id = client.submit_job_execution("ingest_and_features")
    deadline = time.monotonic() + 180
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert status == "SUCCESS", (tmp_path / "dev.log").read_text()[-3000:]
    assert (isolated_env / "mini" / "assets" / "customer_features.parquet").exists()

    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    out = subprocess.run(["pgrep", "-f", f"-p {port}"], capture_output=True, text=True)
    assert out.stdout.strip() == "", f"processes left behind: {out.stdout}"
