"""Rollback: move the pointer back and the MLflow ``champion`` aliases with it."""

from __future__ import annotations

from typing import Any

from churn_assets.lib import deployment as dep
from churn_assets.lib.settings import ChurnSettings
from churn_assets.lib.storage import Storage


def rollback_deployment(
    storage: Storage,
    settings: ChurnSettings,
    dataset: str,
    to: str | None = None,
    *,
    pin: bool = True,
) -> dict[str, Any]:
    """Point at ``to`` (default: the previous version) and pin it; returns the new pointer."""
    pointer = dep.rollback(storage, to, pin=pin)
    manifest = dep.read_manifest(storage, pointer["version"])
    try:
        from churn_assets.lib.tracking import TrackingConfig, set_champion_alias

        tracking = TrackingConfig.from_settings(settings, dataset)
        for role in ("classifier", "regressor"):
            m = manifest["models"].get(role)
            if m and m.get("registered_model") and m.get("registered_version"):
                set_champion_alias(tracking, m["registered_model"], m["registered_version"])
        pointer["mlflow_aliases"] = "moved"
    except Exception as e:  # the pointer is what serving follows; say what did not move
        pointer["mlflow_aliases"] = f"not moved: {e}"
    return pointer
