"""``churn demo``: materialize the whole graph in-process once and summarise it.

The JSON report (``churn demo --json``) is a stable interface, documented in the README:
``dataset``, ``success``, ``seconds``, ``storage_url``, ``assets`` (per asset: ``rows``,
``seconds``, ``metadata``), ``checks`` (per check: ``passed``, ``description``),
``features`` (``rows``, ``columns``, ``cutoff``, ``churn_rate``, ``mean_total_sales``) and
``error`` (null on success).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def _plain(value: Any) -> Any:
    """A JSON-friendly version of a Dagster metadata value."""
    inner = getattr(value, "value", value)
    if isinstance(inner, int | float | str | bool) or inner is None:
        return inner
    if isinstance(inner, list | dict):
        return inner
    return None


def root_cause_text(error: Any) -> str:
    """``ExceptionType: message`` of the innermost cause of a Dagster error record (a
    failed step wraps the user's exception in Dagster's own ones)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    name = getattr(error, "cls_name", None) or "Error"
    message = (getattr(error, "message", "") or "").strip()
    # SerializableErrorInfo messages start with "ClassName: " already
    if message.startswith(f"{name}: "):
        message = message[len(name) + 2 :]
    if name == "Failure" and ": " in message:
        return message.splitlines()[0]
    return f"{name}: {message.splitlines()[0] if message else ''}".strip()


def run_demo(
    dataset: str, *, seed_if_empty: bool = True, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run raw → features (and whatever the graph holds) on ``dataset``; return the report."""
    import dagster as dg

    from churn_assets.cli import landing_has_data
    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.settings import get_settings, join_url
    from churn_assets.resources import ChurnPlatform

    cfg = load_dataset_config(dataset)
    settings = get_settings()
    if cfg.name == "synthetic" and seed_if_empty:
        url = join_url(settings.resolved_landing_url, "synthetic")
        opts = settings.storage_options(url)
        if not landing_has_data(url, opts):
            from churn_assets.lib.generator import generate

            if log:
                log(f"seeding {url} with synthetic data ...")
            generate(url, storage_options=opts, seed=settings.seed)
    defs = build_definitions(ChurnPlatform(dataset=dataset), ChurnIOManager(dataset=dataset))
    job = defs.resolve_implicit_global_asset_job_def()
    if log:
        log(f"materializing the asset graph on data set '{cfg.name}' ...")
    started = time.perf_counter()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    seconds = time.perf_counter() - started

    assets: dict[str, dict[str, Any]] = {}
    durations: dict[str, float] = {}
    for ev in result.all_events:
        if ev.event_type_value == "STEP_SUCCESS" and ev.step_key:
            durations[ev.step_key] = ev.event_specific_data.duration_ms / 1000.0
    for mat in result.get_asset_materialization_events():
        m = mat.materialization
        key = m.asset_key.to_user_string()
        meta = {k: _plain(v) for k, v in m.metadata.items() if k != "preview"}
        meta = {k: v for k, v in meta.items() if v is not None}
        assets[key] = {
            "rows": meta.get("dagster/row_count"),
            "seconds": durations.get(mat.step_key),
            "metadata": meta,
        }
    checks: dict[str, dict[str, Any]] = {}
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_CHECK_EVALUATION":
            e = ev.event_specific_data
            checks[f"{e.asset_key.to_user_string()}:{e.check_name}"] = {
                "passed": e.passed,
                "description": e.description,
            }
    error = None
    if not result.success:
        failures = [
            f"{ev.step_key}: {root_cause_text(ev.event_specific_data.error)}"
            for ev in result.all_events
            if ev.event_type_value == "STEP_FAILURE" and ev.event_specific_data.error
        ]
        error = " | ".join(failures) or "run failed"
    feats = assets.get("customer_features", {}).get("metadata", {})
    models: dict[str, Any] = {}
    for kind, key in (
        ("classification", "classification_models"),
        ("regression", "regression_models"),
    ):
        if key in assets:
            out = result.output_for_node(key)
            if not out.get("applicable", True):
                models[kind] = {"applicable": False, "reason": out["reason"]}
                continue
            models[kind] = {
                k: out[k]
                for k in (
                    "champion",
                    "best_simple",
                    "primary_metric",
                    "champion_metrics",
                    "champion_cv",
                    "threshold",
                    "leaderboard",
                    "selection",
                )
                if k in out
            }
            models[kind]["mlflow_parent_run_id"] = out["mlflow"]["parent_run_id"]
    deployment = None
    if "deployed_model_version" in assets:
        deployment = result.output_for_node("deployed_model_version")
    return {
        "dataset": cfg.name,
        "success": result.success,
        "seconds": round(seconds, 2),
        "storage_url": join_url(settings.resolved_storage_url, cfg.name),
        "pid": os.getpid(),
        "assets": assets,
        "checks": checks,
        "features": {
            "rows": feats.get("dagster/row_count"),
            "columns": feats.get("feature_count"),
            "cutoff": feats.get("cutoff"),
            "churn_rate": feats.get("churn_rate"),
            "mean_total_sales": feats.get("mean_total_sales"),
        },
        "models": models,
        "deployment": deployment,
        "error": error,
    }


def format_report(report: dict[str, Any]) -> str:
    """A readable multi-line summary of a demo report."""
    lines = [
        f"data set   {report['dataset']}  ({'ok' if report['success'] else 'FAILED'}, "
        f"{report['seconds']:.1f} s)",
        f"storage    {report['storage_url']}",
        "",
        f"{'asset':<24}{'rows':>10}{'seconds':>10}",
    ]
    for key, a in report["assets"].items():
        secs = f"{a['seconds']:.2f}" if a["seconds"] is not None else "-"
        rows = f"{a['rows']:,}" if a["rows"] is not None else "-"
        lines.append(f"{key:<24}{rows:>10}{secs:>10}")
    lines.append("")
    failed = {k: c for k, c in report["checks"].items() if not c["passed"]}
    lines.append(f"checks     {len(report['checks']) - len(failed)}/{len(report['checks'])} passed")
    for k, c in failed.items():
        lines.append(f"  FAILED {k}: {c['description']}")
    f = report["features"]
    if f.get("rows"):
        lines.append(
            f"features   {f['rows']:,} customers x {f['columns']} features, cut-off {f['cutoff']}, "
            f"churn rate {f['churn_rate']:.1%}"
        )
    for kind, m in report.get("models", {}).items():
        if not m.get("applicable", True):
            lines.append(f"{kind:<15}{m['reason']}")
            continue
        metric = m["primary_metric"]
        lines.append(
            f"{kind:<15}champion {m['champion']} (holdout {metric} "
            f"{m['champion_metrics'][metric]:.4f}), {len(m['leaderboard'])} candidates"
        )
    d = report.get("deployment")
    if d:
        verb = "promoted" if d["promoted"] else "kept"
        lines.append(f"deployment {verb} {d['version']}: {d['decision']['reason']}")
    if report["error"]:
        lines.append(f"error      {report['error']}")
    return "\n".join(lines)
