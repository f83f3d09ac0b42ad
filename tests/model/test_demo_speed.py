"""The demo's side-by-side model sets: how their runs read as one, and the worker process."""

from __future__ import annotations

import atexit
import gc
from types import SimpleNamespace

import pytest

from churn_assets import demo


def _event(kind: str, step: str) -> SimpleNamespace:
    return SimpleNamespace(event_type_value=kind, step_key=step)


class _Run:
    """A stand-in for an in-process run result."""

    def __init__(self, success: bool, steps: dict[str, object]) -> None:
        self.success = success
        self.all_events = [_event("STEP_START", s) for s in steps] + [
            _event("ASSET_MATERIALIZATION", s) for s in steps
        ]
        self._outputs = steps

    def get_asset_materialization_events(self):
        return [e for e in self.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]

    def output_for_node(self, name: str):
        return self._outputs[name]


def test_graph_result_reads_its_runs_in_order():
    first = _Run(True, {"raw_customers": 1, "training_set": 2})
    worker = demo.RunSummary.of(
        _Run(True, {"regression_models": {"champion": "ridge"}}), ["regression_models"]
    )
    result = demo.GraphResult([first, worker])
    assert result.success
    assert [e.step_key for e in result.get_asset_materialization_events()] == [
        "raw_customers",
        "training_set",
        "regression_models",
    ]
    assert result.output_for_node("regression_models") == {"champion": "ridge"}
    assert result.output_for_node("training_set") == 2
    assert result.errors == []


def test_a_worker_without_result_fails_the_graph_with_a_reason():
    class _DeadPipe:
        def recv(self):
            raise EOFError

    dead = demo.ModelSetWorker(process=None, conn=_DeadPipe()).result()
    result = demo.GraphResult([_Run(True, {"training_set": 1}), dead])
    assert not result.success
    assert result.errors == [f"{demo.WORKER_SET}: the model-set process ended without a result"]


def test_summary_keeps_only_materialized_outputs():
    summary = demo.RunSummary.of(_Run(False, {}), [demo.WORKER_SET])
    assert not summary.success
    assert summary.outputs == {}


def test_worker_stops_when_told_to(tmp_path, monkeypatch):
    monkeypatch.setenv("CHURN_STORAGE_URL", str(tmp_path / "storage"))
    monkeypatch.setenv("CHURN_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    worker = demo.ModelSetWorker.start("synthetic")
    worker.close()
    assert not worker.process.is_alive()
    assert worker.process.exitcode == 0


def test_exit_collection_is_skipped(monkeypatch):
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    demo.skip_exit_collection()
    assert registered == [gc.freeze]


def test_ensemble_holdout_metrics_are_those_of_its_voting_pipeline():
    """The ensemble's holdout metrics come from its members' holdout probabilities; they
    are exactly those of the soft-voting pipeline's own predictions."""
    from threadpoolctl import threadpool_limits

    from churn_assets.lib.models.classification import train_classification_set
    from churn_assets.lib.models.metrics import classification_metrics
    from churn_assets.lib.models.spec import FeatureSpec
    from churn_assets.lib.models.splits import split_snapshot

    from ._data import make_frame

    frame = make_frame(600, seed=3)
    splits, spec = split_snapshot(frame, seed=42), FeatureSpec.infer(frame)
    with threadpool_limits(limits=1):
        result = train_classification_set(
            splits,
            spec,
            seed=42,
            cv_folds=0,
            policy="exhaustive",
            candidates=["logistic_regression", "hist_gradient_boosting", "lightgbm", "ensemble"],
        )
        ens = result.get("ensemble")
        hold = splits["holdout"]
        p = ens.pipeline.predict_proba(hold)[:, 1]
    expected = classification_metrics(hold["churned"].astype(int).to_numpy(), p, ens.threshold)
    assert ens.metrics == expected


def test_a_dead_worker_is_reported_not_raised():
    class _BrokenPipe:
        def send(self, message):
            raise BrokenPipeError

        def recv(self):
            raise EOFError

    worker = demo.ModelSetWorker(process=None, conn=_BrokenPipe())
    worker.go()
    assert not worker.result().success


def _landing(tmp_path, customers: bytes, transactions: bytes):
    from churn_assets.lib.datasets import load_dataset_config

    root = tmp_path / "landing"
    (root / "customers").mkdir(parents=True)
    (root / "transactions").mkdir()
    (root / "customers" / "customers.csv").write_bytes(customers)
    (root / "transactions" / "batch-1.csv").write_bytes(transactions)
    (root / "transactions" / ".partial.csv").write_bytes(b"x" * 1000)  # hidden: not read
    return load_dataset_config("synthetic"), str(root)


def test_landing_bytes_counts_the_files_the_raw_assets_read(tmp_path):
    cfg, root = _landing(tmp_path, b"c" * 300, b"t" * 4000)
    assert demo.landing_bytes(cfg, root, {}) == 4300
    assert demo.landing_bytes(cfg, str(tmp_path / "missing"), {}) is None


class _RecordingWorker:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        log.append("start")

    def go(self) -> None:
        self.log.append("go")

    def result(self):
        return demo.RunSummary(True, [], {}, [])

    def close(self) -> None:
        self.log.append("close")


def _failing_first_stage(tmp_path, monkeypatch):
    """Definitions whose first stage fails at once: the landing zone is empty."""
    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    monkeypatch.setenv("CHURN_STORAGE_URL", str(tmp_path / "storage"))
    monkeypatch.setenv("CHURN_LANDING_URL", str(tmp_path / "empty-landing"))
    return build_definitions(
        ChurnPlatform(dataset="synthetic"), ChurnIOManager(dataset="synthetic")
    )


@pytest.mark.parametrize(
    ("early", "expected"),
    [
        (True, ["start", "close"]),  # started with the graph, closed without being told to train
        (False, []),  # started only once ingestion and features succeed
    ],
)
def test_the_worker_when_ingestion_fails(tmp_path, monkeypatch, early, expected):
    import dagster as dg

    defs = _failing_first_stage(tmp_path, monkeypatch)
    log: list[str] = []
    graph = demo.execute_graph(
        defs, dg.DagsterInstance.ephemeral(), lambda: _RecordingWorker(log), early_worker=early
    )
    assert not graph.success
    assert log == expected


def test_step_by_step_ingests_one_asset_per_run_and_deploys(tmp_path, monkeypatch):
    """Very large data: the first stage is one run per asset, in dependency order, the model
    sets train one after the other without a worker; the graph then deploys as in one run."""
    import dagster as dg

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.lib.generator import generate
    from churn_assets.resources import ChurnPlatform

    monkeypatch.setenv("CHURN_STORAGE_URL", str(tmp_path / "storage"))
    monkeypatch.setenv("CHURN_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    generate(str(tmp_path / "storage" / "landing" / "synthetic"), customers=1500, days=300)
    defs = build_definitions(
        ChurnPlatform(dataset="synthetic"), ChurnIOManager(dataset="synthetic")
    )
    graph = demo.execute_graph(
        defs,
        dg.DagsterInstance.ephemeral(),
        lambda: pytest.fail("no worker starts when the model sets train one by one"),
        step_by_step=True,
        sequential_sets=True,
    )

    assert graph.success, graph.errors
    per_run = [
        sorted(e.step_key for e in r.get_asset_materialization_events()) for r in graph.results
    ]
    assert sorted(per_run[:2]) == [["raw_customers"], ["raw_transactions"]]
    assert per_run[2:5] == [["current_features"], ["customer_features"], ["training_set"]]
    assert per_run[-3:-1] == [["classification_models"], ["regression_models"]]
    assert graph.output_for_node("deployed_model_version")["version"]
    checked = {
        e.step_key for e in graph.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert {"raw_customers", "raw_transactions"} <= checked  # checks inside the raw steps
    assert any(step.startswith("customer_features") for step in checked)  # its own check step
