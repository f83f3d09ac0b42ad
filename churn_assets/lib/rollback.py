"""Rollback: move the pointer back and the MLflow ``champion`` aliases with it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from churn_assets.lib import deployment as dep
from churn_assets.lib.settings import ChurnSettings
from churn_assets.lib.storage import Storage

#: ``mlflow_aliases`` of a rollback whose aliases point at the deployed version's models.
MOVED = "moved"


def rollback_deployment(
    storage: Storage,
    settings: ChurnSettings,
    dataset: str,
    to: str | None = None,
    *,
    pin: bool = True,
    launched_at: float | None = None,
) -> dict[str, Any]:
    """Point at ``to`` (default: the previous version) and pin it; returns the new pointer,
    with ``mlflow_aliases``: :data:`MOVED`, or ``"not moved: <why>"`` (MLflow unreachable:
    serving follows the pointer all the same). ``to`` naming the deployed version moves
    nothing and points the aliases at it again (the repair after a rollback whose aliases
    did not move), pinning it unless ``pin`` is False (``already_deployed`` is then True).
    With ``launched_at`` (a queued run's launch), a pointer moved since is refused
    (:func:`moved_since_launch`)."""
    if launched_at is not None and (moved := moved_since_launch(storage, launched_at)):
        raise dep.DeploymentError(moved)
    current = dep.read_current(storage)
    if to is not None and current is not None and current.get("version") == to:
        pointer = {**(dep.pin_current(storage) if pin else current), "already_deployed": True}
    else:
        pointer = dep.rollback(storage, to, pin=pin)
    pointer["mlflow_aliases"] = sync_champion_aliases(
        storage, settings, dataset, pointer["version"]
    )
    return pointer


def moved_since_launch(storage: Storage, launched_at: float) -> str | None:
    """Why a rollback launched at ``launched_at`` (epoch seconds) must not act, or None: the
    deployment pointer moved after it was launched (a retraining promoted, another rollback
    ran while it was queued). Acting would roll back from a state its user never saw: a
    queued "previous" pinned the very version it was launched to leave. One second of slack
    covers instances that store launch times in whole seconds."""
    current = dep.read_current(storage)
    stamp = (current or {}).get("updated_at")
    if not stamp:
        return None
    moved = dt.datetime.fromisoformat(stamp)
    if moved.tzinfo is None:
        moved = moved.replace(tzinfo=dt.UTC)
    if moved.timestamp() <= launched_at + 1:
        return None
    launched = dt.datetime.fromtimestamp(launched_at, dt.UTC).isoformat(timespec="seconds")
    return (
        f"the deployment changed after this rollback was launched ({launched}): "
        f"{current['version']} since {stamp} ({str(current.get('reason') or '')[:160]}); "
        "nothing was rolled back. Launch it again if it is still wanted"
    )


#: A failed move of the champion aliases, kept until a later deployment run repeats it.
ALIASES_PENDING = "deployments/mlflow_aliases_pending.json"
#: ``mlflow_aliases`` prefix of a version whose registered models the registry does not have.
NOT_REGISTERED = "not registered: "
#: ``mlflow_aliases`` prefix when a champion alias is on another platform's registration.
HELD_ELSEWHERE = "held by another platform: "


def _missing_registration(error: Exception) -> bool:
    """True when MLflow answered that a registered model or version does not exist (its
    store was lost or replaced), not that it could not be reached."""
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def sync_champion_aliases(
    storage: Storage, settings: ChurnSettings, dataset: str, version: str
) -> str:
    """Point the ``champion`` alias of each registered model of ``version`` at it:
    :data:`MOVED`, ``"not moved: <why>"`` or, when the registry answers that it has no such
    model (its store was lost or replaced), :data:`NOT_REGISTERED` and why, or, when a
    ``champion`` alias is on a registration of another platform sharing the registry and
    its model names, :data:`HELD_ELSEWHERE` and why (nothing moved). A move that
    failed is recorded at :data:`ALIASES_PENDING` for :func:`repair_champion_aliases`; one
    that succeeded, or that no later try can make, clears it."""
    manifest = dep.read_manifest(storage, version)
    try:
        from churn_assets.lib.tracking import (
            TrackingConfig,
            champion_storage,
            owned_names,
            set_champion_alias,
        )

        tracking = TrackingConfig.from_settings(settings, dataset)
        registered = [
            (m["registered_model"], m["registered_version"])
            for role in ("classifier", "regressor")
            if (m := manifest["models"].get(role))
            and m.get("registered_model")
            and m.get("registered_version")
        ]
        ours = owned_names(tracking)  # the platform owning a name may move its alias back
        for name, _ in registered:  # else one alias per name: never take another's
            holder = champion_storage(tracking, name)
            if holder is not None and holder != storage.url() and name not in ours:
                if storage.exists(ALIASES_PENDING):
                    storage.delete(ALIASES_PENDING)
                return (
                    f"{HELD_ELSEWHERE}{name}@champion is on a version registered by the "
                    f"platform storing at {holder}, which shares the MLflow registry at "
                    f"{tracking.tracking_uri} and its model names with this one (storing at "
                    f"{storage.url()}); moving it would change what that platform's "
                    "champion is"
                )
        for name, number in registered:
            try:
                set_champion_alias(tracking, name, number)
            except Exception as e:
                if not _missing_registration(e):
                    raise
                if storage.exists(ALIASES_PENDING):
                    storage.delete(ALIASES_PENDING)
                return (
                    f"{NOT_REGISTERED}the MLflow registry at {tracking.tracking_uri} has "
                    f"no {name} version {number} ({e}): its store was lost or replaced "
                    "since, or MLFLOW_TRACKING_URI names another one"
                )
    except Exception as e:  # the pointer is what serving follows; say what did not move
        outcome = f"not moved: {type(e).__name__}: {e}"
        storage.write_json(ALIASES_PENDING, {"version": version, "outcome": outcome})
        return outcome
    if storage.exists(ALIASES_PENDING):
        storage.delete(ALIASES_PENDING)
    return MOVED


def repair_champion_aliases(storage: Storage, settings: ChurnSettings, dataset: str) -> str | None:
    """Move the champion aliases to the deployed version when their move failed when it was
    deployed (MLflow unreachable then) and it is still deployed: what was done, or None
    when nothing was pending. Only a failure of this platform's own move is repaired, so
    another platform sharing the registry never has its alias moved back."""
    if not storage.exists(ALIASES_PENDING):
        return None
    pending = storage.read_json(ALIASES_PENDING)
    current = dep.read_current(storage) or {}
    if current.get("version") != pending.get("version"):  # deployed anew since: moot
        storage.delete(ALIASES_PENDING)
        return None
    outcome = sync_champion_aliases(storage, settings, dataset, current["version"])
    if outcome == MOVED:
        return (
            f"the MLflow champion aliases now point at {current['version']} (they did not "
            f"move when it was deployed: {pending.get('outcome')})"
        )
    return f"the MLflow champion aliases still do not point at {current['version']}: {outcome}"


def aliases_problem(pointer: dict[str, Any]) -> str | None:
    """What to tell the operator when the aliases did not follow the pointer, else None."""
    if pointer.get("mlflow_aliases") == MOVED:
        return None
    version = pointer["version"]
    outcome = str(pointer.get("mlflow_aliases"))
    if outcome.startswith(HELD_ELSEWHERE):  # repeating would take the other's alias
        return (
            f"{version} is deployed (serving follows it from storage and needs no MLflow), "
            f"but the MLflow champion aliases did not move: "
            f"{outcome.removeprefix(HELD_ELSEWHERE)}. Set CHURN_MLFLOW_NAMESPACE (a short "
            "name such as production) for this platform: its next promoted version "
            "registers under names of its own and moves their aliases"
        )
    if outcome.startswith(NOT_REGISTERED):  # trying again cannot help: say so
        return (
            f"{version} is deployed (serving follows it from storage and needs no MLflow), "
            f"but no MLflow champion alias can point at it: "
            f"{outcome.removeprefix(NOT_REGISTERED)}. Nothing to repeat: the next promoted "
            "version registers its models and moves the aliases"
        )
    # a rollback pins what it deploys: for a version that is not pinned (a promotion), the
    # command without --no-pin also turned automatic promotion off until `churn unpin`
    keep = "" if pointer.get("pinned") else " --no-pin"
    return (
        f"{version} is deployed (serving follows it), but the MLflow champion aliases were "
        f"{pointer.get('mlflow_aliases')}; once MLflow answers, `churn rollback --to {version}"
        f"{keep}` points them at it"
    )
