"""Run and check notifications: a local HTTP receiver gets what the sensors post.

The failed run and the failed check are real Dagster executions (``dg.materialize`` on a
test instance); the sensors are evaluated with the run status contexts the daemon builds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pytest

from churn_assets.alert_sensors import check_failure_notifier, run_failure_notifier
from churn_assets.lib import notify

UI = "http://dagster.example:3000"


@dataclass
class Receiver:
    """A loopback HTTP server that records every JSON body; answers ``statuses`` in turn
    (then 200)."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.bodies.append(json.loads(body))
            status = rec.statuses.pop(0) if rec.statuses else 200
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"no")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/churn"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    monkeypatch.setenv(notify.WEBHOOK_ENV, receiver.url)
    monkeypatch.setenv(notify.UI_ENV, UI + "/")
    return receiver


# ------------------------------------------------------------------------ the posting


def test_post_retries_server_errors_then_delivers(receiver: Receiver):
    receiver.statuses = [503, 500]
    waits: list[float] = []
    alert = notify.Alert(title="t", reason="r", link=f"{UI}/runs/1")
    assert notify.post_alert(receiver.url, alert, sleep=waits.append) == 200
    assert len(receiver.bodies) == 3 and waits == [0.5, 1.0]


def test_post_gives_up_after_the_retries_and_does_not_retry_a_4xx(receiver: Receiver):
    alert = notify.Alert(title="t", reason="r", link=f"{UI}/runs/1")
    receiver.statuses = [500] * 3
    with pytest.raises(notify.NotificationError, match="after 3 attempts: HTTP 500"):
        notify.post_alert(receiver.url, alert, retries=2, sleep=lambda s: None)
    receiver.statuses = [404]
    with pytest.raises(notify.WebhookRefused, match="HTTP 404"):
        notify.post_alert(receiver.url, alert, sleep=lambda s: None)
    assert len(receiver.bodies) == 4


def test_post_to_a_closed_port_fails_within_the_retries():
    with pytest.raises(notify.NotificationError, match="unreachable after 2 attempts"):
        notify.post_json(
            "http://127.0.0.1:9/", {"text": "x"}, retries=1, timeout=1, sleep=lambda s: None
        )


# ------------------------------------------------------------------ a real failed run

RUN_FAILURE = "raw_orders: ValueError: landing file orders.csv has no customer_id column"


@dg.asset
def raw_orders() -> None:
    raise ValueError("landing file orders.csv has no customer_id column")


@dg.asset(deps=[raw_orders])
def order_features() -> None:
    pass


def failed_run_context(
    instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> dg.RunFailureSensorContext:
    result = dg.materialize(
        [raw_orders, order_features],
        instance=instance,
        raise_on_error=False,
        tags={"churn/trigger": "landing", "churn/dataset": "telco"} if tags is None else tags,
    )
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_notifier",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()


def test_a_failed_run_posts_run_step_asset_reason_and_link(webhook: Receiver):
    with dg.instance_for_test() as instance:
        context = failed_run_context(instance)
        assert run_failure_notifier(context) is None
    (body,) = webhook.bodies
    run_id = context.dagster_run.run_id
    text = body["text"]
    assert text.startswith(":rotating_light: Dagster run failed: __ephemeral_asset_job__")
    assert f"Run: {run_id} (__ephemeral_asset_job__)" in text
    assert "Step: raw_orders" in text and "Asset: raw_orders" in text
    assert "order_features" not in text  # it never ran: not a cause
    assert f"Reason: {RUN_FAILURE}" in text
    assert "Trigger: landing" in text
    assert "Data set: telco" in text  # several data sets share one instance
    assert f"Open in Dagster: {UI}/runs/{run_id}" in text
    button = body["blocks"][-1]["elements"][0]
    assert button["url"] == f"{UI}/runs/{run_id}"
    fields = {f["text"].split("\n")[0]: f["text"] for f in body["blocks"][1]["fields"]}
    assert fields["*Asset*"] == "*Asset*\nraw_orders"


def test_a_failed_run_launched_in_the_ui_names_the_data_set(webhook: Receiver):
    """A run launched in the UI (or by `dagster asset materialize`) carries no data set tag:
    its alert named no data set, though each data set's sensor watches its own location."""
    from churn_assets import scope

    with dg.instance_for_test() as instance:
        assert run_failure_notifier(failed_run_context(instance, tags={})) is None
    (body,) = webhook.bodies
    assert f"Data set: {scope.DATASET}" in body["text"]


def interrupted_run(
    instance: dg.DagsterInstance, job_name: str, tags: dict[str, str]
) -> dg.RunFailureSensorContext:
    """A run with ``tags`` that a restart failed (no step failed), as the notifier sees it."""
    from dagster._core.storage.dagster_run import DagsterRun

    run = instance.add_run(
        DagsterRun(job_name=job_name, status=dg.DagsterRunStatus.STARTED, tags=tags)
    )
    instance.report_run_failed(run, "the platform stopped while this run was in progress")
    (event,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_notifier",
        dagster_event=event.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
    ).for_run_failure()


def test_an_interrupted_run_the_daemon_retries_is_not_posted(webhook: Receiver):
    """A restart of the platform fails the runs it interrupts (no step failed); the daemon
    launches them again (`dagster/max_retries` 2). Each was posted as a failure: a false
    alarm per restart. Only a run out of retries, or failed by a step, is posted."""
    with dg.instance_for_test() as instance:

        def interrupted(retry: int) -> dg.RunFailureSensorContext:
            tags = {"dagster/max_retries": "2", "churn/dataset": "telco"}
            if retry:
                tags["dagster/retry_number"] = str(retry)
            return interrupted_run(instance, "ingest_features_drift", tags)

        skipped = run_failure_notifier(interrupted(0))
        assert isinstance(skipped, dg.SkipReason)
        assert "the daemon launches it again (retry 1 of 2)" in (skipped.skip_message or "")
        assert webhook.bodies == []
        assert run_failure_notifier(interrupted(2)) is None  # the last retry: posted
    (body,) = webhook.bodies
    assert "the platform stopped while this run was in progress" in body["text"]


def test_an_interrupted_run_the_daemon_could_not_launch_again_is_posted(webhook: Receiver):
    """After a restart of the code server its interrupted runs are marked failed before the
    server is up; the daemon's retry then fails ("Could not reach user code server") and
    the instance tags the run `dagster/will_retry: false`. The notifier still skipped it
    ("the daemon launches it again (retry 1 of 2)"): the run was never launched again and
    its failure never posted. The instance's verdict now decides."""
    with dg.instance_for_test() as instance:

        def interrupted(will_retry: str) -> dg.RunFailureSensorContext:
            tags = {"dagster/max_retries": "2", "dagster/will_retry": will_retry}
            return interrupted_run(instance, "retraining", tags)

        assert isinstance(run_failure_notifier(interrupted("true")), dg.SkipReason)
        assert webhook.bodies == []
        assert run_failure_notifier(interrupted("false")) is None
    (body,) = webhook.bodies
    assert "the platform stopped while this run was in progress" in body["text"]


def test_without_a_webhook_the_run_sensor_skips_and_says_why(receiver: Receiver):
    with dg.instance_for_test() as instance:
        result = run_failure_notifier(failed_run_context(instance))
    assert isinstance(result, dg.SkipReason)
    assert "CHURN_ALERT_WEBHOOK_URL is not set" in (result.skip_message or "")
    assert receiver.bodies == []


# ---------------------------------------------------------------- a real failed check


@dg.asset
def scored_customers() -> int:
    return 3


@dg.asset_check(asset=scored_customers, description="every score within [0, 1]")
def scores_in_range() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description="4 of 1000 scores outside [0, 1]",
    )


@dg.asset_check(asset=scored_customers)
def scores_present() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def finished_run_context(instance: dg.DagsterInstance, *assets: Any) -> Any:
    """Materialize ``assets``; the run status sensor context of the finished run."""
    result = dg.materialize(list(assets), instance=instance, raise_on_error=False)
    kind = dg.DagsterEventType.RUN_SUCCESS if result.success else dg.DagsterEventType.RUN_FAILURE
    (event,) = [e for e in result.all_events if e.event_type == kind]
    context = dg.build_run_status_sensor_context(
        sensor_name="check_failure_notifier",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    )
    return context if result.success else context.for_run_failure()


def test_a_failed_check_posts_asset_check_reason_and_link(webhook: Receiver):
    with dg.instance_for_test() as instance:
        context = finished_run_context(instance, scored_customers, scores_in_range, scores_present)
        assert check_failure_notifier(context) is None
    (body,) = webhook.bodies  # the passing check is not news
    run_id = context.dagster_run.run_id
    text = body["text"]
    assert text.startswith(":warning: Asset check failed: scored_customers / scores_in_range")
    assert f"Run: {run_id} (__ephemeral_asset_job__)" in text
    assert "Step: scored_customers_scores_in_range" in text
    assert "Asset: scored_customers" in text and "Severity: warning" in text
    assert "Reason: 4 of 1000 scores outside [0, 1]" in text
    assert f"Open in Dagster: {UI}/assets/scored_customers?view=checks" in text
    assert f"Run page: {UI}/runs/{run_id}" in text


def test_a_run_whose_checks_pass_posts_nothing(webhook: Receiver):
    with dg.instance_for_test() as instance:
        context = finished_run_context(instance, scored_customers, scores_present)
        result = check_failure_notifier(context)
    assert "every asset check passed" in result.skip_message
    assert webhook.bodies == []


def test_a_failed_run_lists_its_failed_checks(webhook: Receiver):
    @dg.asset
    def labels() -> int:
        return 1

    @dg.asset_check(asset=labels, blocking=True)
    def labels_not_empty() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, description="0 labelled customers")

    @dg.asset(deps=[labels])
    def training_set() -> None:
        raise RuntimeError("no labels to train on")

    with dg.instance_for_test() as instance:
        context = finished_run_context(instance, labels, labels_not_empty, training_set)
        assert run_failure_notifier(context) is None
    (body,) = webhook.bodies
    assert "Failed checks: labels / labels_not_empty" in body["text"]


def test_without_a_webhook_the_check_sensor_skips_and_says_why(receiver: Receiver):
    with dg.instance_for_test() as instance:
        context = finished_run_context(instance, scored_customers, scores_in_range)
        result = check_failure_notifier(context)
    assert "CHURN_ALERT_WEBHOOK_URL is not set" in result.skip_message
    assert receiver.bodies == []


def test_the_platform_registers_both_notifiers():
    from churn_assets.definitions import defs

    repo = defs.get_repository_def()
    names = {s.name for s in repo.sensor_defs}
    assert {"run_failure_notifier", "check_failure_notifier", "run_failure_recorder"} <= names
    assert repo.get_sensor_def("check_failure_notifier").default_status == (
        dg.DefaultSensorStatus.RUNNING
    )
