"""MLflow tracking of model sets: one parent run per set, a nested run per candidate.

Embedded default: a SQLite tracking store and registry in ``<storage>/mlflow/mlflow.db``
(``.churn/mlflow.db`` when storage is remote) with artifacts under the storage root;
``MLFLOW_TRACKING_URI`` (or ``CHURN_MLFLOW_TRACKING_URI``) switches to a server. Every run is
opened with a context manager, so it ends FINISHED or FAILED, never left RUNNING.
A model is registered only when deployment promotes it (it passed the floors and the gate),
under a name that includes the data set (``<data set>-churn-classifier``,
``<data set>-clv-regressor``); the new version gets the alias ``challenger`` (the newest
promoted version) and, once the version is deployed, ``champion`` (what serving answers
with; a rollback moves it back). A registration whose deployment version was never written
(the run stopped in between) is deleted by that run as it fails,
else by the next deployment run (:func:`unrecorded_registrations`).
Platforms sharing one MLflow server need names of their own (``CHURN_MLFLOW_NAMESPACE``
prefixes them): another platform's experiment is refused (:mod:`.shared_tracking`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churn_assets.lib.settings import ChurnSettings, join_url
from churn_assets.lib.shared_tracking import SharedExperimentError, foreign_experiment

CLASSIFIER_NAME = "churn-classifier"
REGRESSOR_NAME = "clv-regressor"
_ROLE_NAMES = {"classifier": CLASSIFIER_NAME, "regressor": REGRESSOR_NAME}
CHALLENGER = "challenger"
CHAMPION = "champion"


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking server cannot be reached."""


#: A data set's MLflow experiment is named this followed by the data set's name.
EXPERIMENT_PREFIX = "churn-"


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs, models and artifacts go."""

    tracking_uri: str
    artifact_location: str
    experiment: str
    #: The S3-compatible endpoint of the storage (MinIO, moto), for artifacts under it.
    s3_endpoint_url: str | None = None
    #: ``CHURN_MLFLOW_NAMESPACE``: starts the experiment and registered model names.
    namespace: str = ""
    #: The tracking store is the embedded one inside a local storage root (no other
    #: platform can share it, and it moves with the folder).
    embedded: bool = False

    @classmethod
    def from_settings(cls, settings: ChurnSettings, dataset: str) -> TrackingConfig:
        """Tracking URI from ``MLFLOW_TRACKING_URI`` / settings, else the local SQLite store."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.mlflow_tracking_uri
        if settings.env == "compose" and not uri:
            uri = "http://mlflow:5000"
        root = settings.resolved_storage_url
        local = Path(root) if "://" not in root else Path(".churn").resolve()
        embedded_uri = f"sqlite:///{local / 'mlflow' / 'mlflow.db'}"
        if not uri:
            (local / "mlflow").mkdir(parents=True, exist_ok=True)
            uri = embedded_uri
        namespace = settings.mlflow_namespace or ""
        return cls(
            uri,
            join_url(root, "mlflow", "artifacts", dataset),
            experiment_name(dataset, namespace),
            settings.resolved_s3_endpoint_url,
            namespace,
            embedded="://" not in root and uri == embedded_uri,
        )

    @property
    def dataset(self) -> str:
        """The data set whose experiment this is (:meth:`from_settings` names it)."""
        name = self.experiment.removeprefix(EXPERIMENT_PREFIX)
        return name.removeprefix(f"{self.namespace}-") if self.namespace else name


def experiment_name(dataset: str, namespace: str = "") -> str:
    """A data set's MLflow experiment: ``churn-<data set>``, ``churn-<namespace>-<data set>``."""
    return (
        f"{EXPERIMENT_PREFIX}{namespace}-{dataset}"
        if namespace
        else f"{EXPERIMENT_PREFIX}{dataset}"
    )


def _client(cfg: TrackingConfig):
    # fail within about a minute when a tracking server is down (MLflow's default retries
    # take several minutes); the asset's retry policy then tries again with backoff
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    if cfg.s3_endpoint_url and cfg.artifact_location.startswith("s3://"):
        # MLflow's own S3 client reads the endpoint from here; without it, artifacts under
        # an s3:// storage root on MinIO or moto would be sent to AWS
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", cfg.s3_endpoint_url)
    import mlflow
    from mlflow.tracking import MlflowClient

    # MLflow also writes the URI into os.environ["MLFLOW_TRACKING_URI"], where
    # :meth:`TrackingConfig.from_settings` reads the operator's choice: a second storage used
    # by this process (a notebook, a test) then tracked into the first one's store
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    return MlflowClient(cfg.tracking_uri, cfg.tracking_uri)


def _store_lock(cfg: TrackingConfig):
    """A file lock around first use of a local SQLite store: MLflow migrates the schema on
    first connection, and two processes doing it at once collide."""
    from contextlib import nullcontext

    if not cfg.tracking_uri.startswith("sqlite:///"):
        return nullcontext()
    from filelock import FileLock

    return FileLock(cfg.tracking_uri[len("sqlite:///") :] + ".lock", timeout=300)


def ensure_experiment(cfg: TrackingConfig) -> str:
    """Create the experiment with its artifact location under the storage root (once)."""
    with _store_lock(cfg):
        _seed_sqlite_store(cfg)
        return _ensure_experiment(cfg)


#: Where the empty, migrated SQLite schema of this MLflow version is kept between stores.
CACHE_DIR_ENV = "CHURN_CACHE_DIR"


def _cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "churn-platform"


def _seed_sqlite_store(cfg: TrackingConfig) -> None:
    """Start a new local SQLite store as a copy of an empty store MLflow itself migrated.

    MLflow builds a new SQLite store by running every schema migration since its first
    release: about 6 s of CPU, paid by every fresh storage directory (each demo, each
    test). The migrated schema is made once per MLflow version in the user's cache
    directory (``CHURN_CACHE_DIR``, else ``$XDG_CACHE_HOME/churn-platform``) and copied;
    MLflow then verifies the schema and adds its default experiment as usual. Any problem
    with the cache leaves the store to MLflow's own creation."""
    if not cfg.tracking_uri.startswith("sqlite:///"):
        return
    db = Path(cfg.tracking_uri[len("sqlite:///") :])
    if db.exists():
        return
    try:
        template = _sqlite_schema_template()
        db.parent.mkdir(parents=True, exist_ok=True)
        partial = db.with_name(f".{db.name}.{os.getpid()}.partial")
        shutil.copyfile(template, partial)
        os.replace(partial, db)
    except Exception:  # noqa: BLE001 - MLflow creates the store itself
        return


def _sqlite_schema_template() -> Path:
    import mlflow
    from filelock import FileLock

    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    template = cache / f"mlflow-{mlflow.__version__}-schema.db"
    with FileLock(str(template) + ".lock", timeout=300):
        if template.exists():
            return template
        from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

        partial = template.with_name(f".{template.name}.{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        engine = create_sqlalchemy_engine(f"sqlite:///{partial}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(partial, template)
    return template


def _ensure_experiment(cfg: TrackingConfig) -> str:
    client = _client(cfg)
    try:
        exp = client.get_experiment_by_name(cfg.experiment)
    except Exception as e:  # connection errors surface as MlflowException / requests errors
        raise TrackingUnavailableError(  # the cause's text is kept here: this is the root
            f"MLflow tracking at {cfg.tracking_uri} is unreachable (set by "
            "MLFLOW_TRACKING_URI, CHURN_MLFLOW_TRACKING_URI or CHURN_ENV=compose; unset, a "
            f"local SQLite store under the storage root is used): {type(e).__name__}: {e}"
        ) from None
    if exp is not None:
        if problem := foreign_experiment(cfg, exp.artifact_location):
            raise SharedExperimentError(problem)
        return exp.experiment_id
    return client.create_experiment(cfg.experiment, artifact_location=cfg.artifact_location)


def _numeric(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int | float) and v == v:  # drop NaN
            out[f"{prefix}{k}"] = float(v)
    return out


def _params(d: dict[str, Any]) -> dict[str, str]:
    return {k[:250]: str(v)[:500] for k, v in list(d.items())[:100]}


def registered_name(dataset: str, role: str, namespace: str = "") -> str:
    """The registry name of a data set's model role (``classifier`` or ``regressor``):
    ``<data set>-churn-classifier``, ``<namespace>-<data set>-churn-classifier``."""
    name = f"{dataset}-{_ROLE_NAMES[role]}"
    return f"{namespace}-{name}" if namespace else name


def log_model_set(
    result: Any,
    cfg: TrackingConfig,
    *,
    dataset: str,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Log every candidate of a model set (nested under one parent run): parameters and
    metrics for all, an MLflow model only for the candidates deployment can use (champion,
    best simple, naive baseline; serializing the screened-out forests cost seconds each and
    nobody loads them). Nothing is registered here: see :func:`register_promoted`. Returns
    run ids and, for the deployable candidates, model URIs."""
    import mlflow
    import mlflow.sklearn

    from churn_assets.lib.models.persistence import ALLOWED_TYPES

    exp_id = ensure_experiment(cfg)
    _client(cfg)  # sets the tracking URI and request timeouts
    # "Detected uv project" once per logged model: the requirements are given explicitly
    logging.getLogger("mlflow.utils.uv_utils").setLevel(logging.WARNING)
    trusted = sorted(ALLOWED_TYPES)
    runs: dict[str, dict[str, str]] = {}
    deployable = {result.champion, result.best_simple, "naive_baseline"}
    base_tags = {"dataset": dataset, "model_set": result.kind, **(tags or {})}
    with mlflow.start_run(
        experiment_id=exp_id, run_name=f"{result.kind}-model-set", tags=base_tags
    ) as parent:
        mlflow.log_params(
            {
                "primary_metric": result.primary_metric,
                "seed": result.seed,
                "candidates": ",".join(c.name for c in result.candidates),
                "champion": result.champion,
                "best_simple": result.best_simple,
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            board = result.leaderboard()
            board.to_csv(Path(tmp) / "leaderboard.csv", index=False)
            (Path(tmp) / "leaderboard.md").write_text(result.leaderboard_markdown())
            (Path(tmp) / "feature_spec.json").write_text(json.dumps(result.feature_spec))
            mlflow.log_artifacts(tmp)
        champ = result.champion_result
        mlflow.log_metrics(_numeric(champ.metrics, "champion_"))
        for cand in result.candidates:
            with mlflow.start_run(
                experiment_id=exp_id,
                run_name=cand.name,
                nested=True,
                tags={**base_tags, "candidate": cand.name, "is_simple": str(cand.is_simple)},
            ) as child:
                mlflow.log_params(_params(cand.params))
                mlflow.log_metrics(
                    {
                        **_numeric(cand.metrics),
                        **_numeric(cand.cv),
                        **_numeric(cand.validation_metrics, "val_"),
                        "train_seconds": cand.train_seconds,
                    }
                )
                if cand.threshold is not None:
                    mlflow.log_metric("threshold", cand.threshold)
                runs[cand.name] = {"run_id": child.info.run_id}
                if cand.name not in deployable:
                    continue
                info = mlflow.sklearn.log_model(
                    cand.pipeline,
                    name="model",
                    # a classifier's pyfunc predict gives probabilities: its labels at 0.5
                    # would differ from the platform's (at the stored threshold)
                    pyfunc_predict_fn="predict_proba"
                    if result.kind == "classification"
                    else "predict",
                    serialization_format="skops",
                    skops_trusted_types=trusted,
                    pip_requirements=[
                        "scikit-learn",
                        "skops",
                        "lightgbm",
                        "xgboost-cpu",
                        "churn-platform",
                    ],
                )
                runs[cand.name]["model_uri"] = info.model_uri
        parent_id = parent.info.run_id
    return {
        "tracking_uri": cfg.tracking_uri,
        "experiment": cfg.experiment,
        "parent_run_id": parent_id,
        "runs": runs,
    }


def register_promoted(
    cfg: TrackingConfig,
    *,
    dataset: str,
    role: str,
    model_uri: str,
    candidate: str,
    version: str,
    threshold: float | None = None,
    storage_url: str | None = None,
) -> dict[str, str]:
    """Register a promoted model under the data set's name, tag it with the deployed
    version, candidate, (a classifier) decision threshold and the ``storage_url`` of the
    deployment that registers it, describe what its
    ``predict`` returns, and point ``challenger`` at it. ``champion`` follows once the
    version is deployed (:func:`~churn_assets.lib.rollback.sync_champion_aliases`), so a
    deployment that fails after this call (a full disk, storage refusing a write) leaves it
    on what serving answers with; the registration of a version never written is then
    deleted (:func:`unregister`)."""
    import mlflow

    client = _client(cfg)
    name = registered_name(dataset, role, cfg.namespace)
    tags = {"candidate": candidate, "deployed_version": version}
    if storage_url is not None:
        tags[STORAGE_TAG] = storage_url
    if threshold is not None:
        tags["threshold"] = repr(float(threshold))  # exact: labels as churn_scores does
    # the tags travel in the request that creates the version: a server gone right after
    # it (tags set one by one afterwards) left a version without them, which the next
    # deployment's clean-up (:func:`unrecorded_registrations`) could not recognise
    registered = mlflow.register_model(model_uri, name, tags=tags)
    client.update_model_version(
        name, registered.version, description=model_description(role, version, threshold)
    )
    client.set_registered_model_alias(name, CHALLENGER, registered.version)
    return {"registered_model": name, "registered_version": str(registered.version)}


#: Model version tag naming the storage of the deployment that registered it.
STORAGE_TAG = "storage"


def unrecorded_registrations(
    cfg: TrackingConfig, dataset: str, recorded: Collection[str], storage_url: str
) -> list[tuple[str, str]]:
    """``(registered model, version)`` of each model registered from the storage at
    ``storage_url`` for a deployment version newer than every version that storage has
    recorded (:func:`~churn_assets.lib.deployment.recorded_versions`): a deployment stopped
    between registering its models and writing the version (killed, a crash) left them.
    Registrations of another platform sharing the registry (a staging and a production
    storage) are never touched. With nothing recorded, none: an empty storage (a new bucket,
    a test) says nothing about the registry."""
    if not recorded:
        return []
    newest = max(recorded)
    return [
        (name, version)
        for name, version, deployment, _ in _own_registrations(cfg, dataset, storage_url)
        if deployment > newest and deployment not in recorded
    ]


def retired_registrations(
    cfg: TrackingConfig, dataset: str, stored: Collection[str], storage_url: str
) -> list[tuple[str, str]]:
    """``(registered model, version)`` of each model registered from the storage at
    ``storage_url`` for a deployment version that storage no longer has (retention removed
    its files: it can never be served or rolled back to again) and that holds no alias.
    Registrations for versions newer than every stored one (a deployment still writing) and
    those of another platform sharing the registry are never named."""
    if not stored:
        return []
    newest = max(stored)
    return [
        (name, version)
        for name, version, deployment, aliased in _own_registrations(cfg, dataset, storage_url)
        if not aliased and deployment < newest and deployment not in stored
    ]


def _own_registrations(
    cfg: TrackingConfig, dataset: str, storage_url: str
) -> Iterator[tuple[str, str, str, bool]]:
    """``(registered model, version, deployment version, holds an alias)`` of each model
    version of the data set registered from the storage at ``storage_url``."""
    client = _client(cfg)
    for role in _ROLE_NAMES:
        name = registered_name(dataset, role, cfg.namespace)
        found = client.search_model_versions(f"name='{name}'")
        if not found:
            continue
        # a search leaves a version's aliases out: the registered model has them
        held = {str(v) for v in (client.get_registered_model(name).aliases or {}).values()}
        for mv in found:
            tags = mv.tags or {}
            if tags.get(STORAGE_TAG) == storage_url and tags.get("deployed_version"):
                yield name, str(mv.version), tags["deployed_version"], str(mv.version) in held


def unregister(cfg: TrackingConfig, registrations: Collection[tuple[str, str]]) -> list[str]:
    """Delete these ``(registered model, version)`` (models of a version never written:
    the registry holds only versions that passed the gate and were recorded); where
    ``challenger`` was on one of them, it names the newest registration left, as after a
    promotion. Returns ``<name> <version>`` of each deleted one."""
    client = _client(cfg)
    deleted = []
    for name, version in registrations:
        client.delete_model_version(name, version)  # its aliases go with it
        deleted.append(f"{name} {version}")
    for name in {name for name, _ in registrations}:
        try:
            client.get_model_version_by_alias(name, CHALLENGER)
            continue
        except Exception:  # it was on a deleted version
            left = [int(mv.version) for mv in client.search_model_versions(f"name='{name}'")]
        if left:
            client.set_registered_model_alias(name, CHALLENGER, str(max(left)))
    return deleted


def model_description(role: str, version: str, threshold: float | None) -> str:
    """What a registered model's ``predict`` returns and how the platform reads it."""
    if role == "classifier":
        cut = f" {threshold:.6g}" if threshold is not None else ""
        return (
            f"Churn classifier of deployed version {version}. Input: the feature columns of "
            "customer_features / current_features (feature_spec.json of its run). predict "
            "(pyfunc) and predict_proba (sklearn) return [P(retained), P(churned)] per row; "
            f"the platform labels a customer churned when P(churned) >= the threshold{cut} "
            "(the version's 'threshold' tag), as churn_scores and the sidecar do."
        )
    return (
        f"Value regressor of deployed version {version}. Input: the feature columns of "
        "customer_features / current_features (feature_spec.json of its run). predict "
        "returns the expected total sales over the label horizon, as the sidecar's "
        "expected_total_sales."
    )


def tag_candidate_run(cfg: TrackingConfig, run_id: str, tags: dict[str, str]) -> None:
    """Add tags (e.g. the gate's verdict) to a candidate's run."""
    client = _client(cfg)
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value)[:5000])


def owned_names(cfg: TrackingConfig) -> set[str]:
    """The registered model names that are this platform's: those of its names
    (``CHURN_MLFLOW_NAMESPACE``) when their experiment is its own or not created yet; none
    when another platform's storage created it (:func:`foreign_experiment`)."""
    exp = _client(cfg).get_experiment_by_name(cfg.experiment)
    if exp is not None and foreign_experiment(cfg, exp.artifact_location):
        return set()
    return {registered_name(cfg.dataset, role, cfg.namespace) for role in _ROLE_NAMES}


def champion_storage(cfg: TrackingConfig, registered_name: str) -> str | None:
    """The storage (tag :data:`STORAGE_TAG`) of the platform whose registration the
    ``champion`` alias of ``registered_name`` is on; None when it is on none, or on a
    version registered without the tag (by an earlier release)."""
    client = _client(cfg)
    try:
        held = client.get_model_version_by_alias(registered_name, CHAMPION)
    except Exception as e:
        code = getattr(e, "error_code", None)
        if code == "RESOURCE_DOES_NOT_EXIST" or (
            code == "INVALID_PARAMETER_VALUE" and "alias" in str(e)
        ):
            return None  # no champion yet (or no such model: moving the alias says so)
        raise
    return (held.tags or {}).get(STORAGE_TAG)


def set_champion_alias(cfg: TrackingConfig, registered_name: str, version: str) -> None:
    """Point the ``champion`` alias of ``registered_name`` at ``version``."""
    _client(cfg).set_registered_model_alias(registered_name, CHAMPION, str(version))


#: ``run_name`` of the MLflow run that holds a drift report (retention keeps the newest).
DRIFT_REPORT_RUN = "drift-report"


def log_file(cfg: TrackingConfig, local_path: str, run_name: str, tags: dict[str, str]) -> str:
    """Log one file as the artifact of a small run (e.g. a drift report); returns the run id."""
    import mlflow

    exp_id = ensure_experiment(cfg)
    _client(cfg)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags) as run:
        mlflow.log_artifact(local_path)
        return run.info.run_id
