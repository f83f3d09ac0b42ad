"""Test helpers: run the asset graph with explicit resources and read its results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg


@dataclass
class GraphRun:
    """What one materialization of the graph produced."""

    result: Any
    checks: dict[str, Any]  # "asset:check" -> AssetCheckEvaluation
    materialized: set[str]

    def check(self, asset: str, name: str):
        return self.checks[f"{asset}:{name}"]


def run_graph(
    dataset: str,
    selection: list[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    **platform: Any,
) -> GraphRun:
    """Materialize the graph (or ``selection``) in-process on ``dataset`` (on ``instance``,
    else an ephemeral one)."""
    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.partitions import run_in_process
    from churn_assets.resources import ChurnPlatform

    io_kwargs = {k: v for k, v in platform.items() if k in ("storage_url", "s3_endpoint_url")}
    defs = build_definitions(
        ChurnPlatform(dataset=dataset, **platform), ChurnIOManager(dataset=dataset, **io_kwargs)
    )
    job = defs.resolve_implicit_global_asset_job_def()
    result = run_in_process(
        job,
        instance or dg.DagsterInstance.ephemeral(),
        ChurnPlatform(dataset=dataset, **platform),
        [dg.AssetKey(k) for k in selection] if selection else None,
    )
    checks = {}
    for e in result.get_asset_check_evaluations():
        checks[f"{e.asset_key.to_user_string()}:{e.check_name}"] = e
    materialized = {
        m.materialization.asset_key.to_user_string()
        for m in result.get_asset_materialization_events()
    }
    return GraphRun(result, checks, materialized)
