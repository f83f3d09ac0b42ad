"""Versioned model deployments in storage: manifest, artifacts with sha256, a pointer.

Layout under ``<storage>/<data set>/deployments/``::

    versions/vYYYYMMDD-HHMMSS/manifest.json   model files, sha256, schema, metrics, lineage
    versions/vYYYYMMDD-HHMMSS/*.skops         champion and fallback pipelines (skops)
    current.json                              the pointer: version + history

Artifacts are written and read back (sha256 verified) before the manifest, and the pointer
is written last in one atomic write (a rename locally, a single PUT on S3), so a crash at
any point leaves ``current.json`` naming a complete version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from churn_assets.lib.storage import Storage

ROOT = "deployments"
POINTER = f"{ROOT}/current.json"
MODEL_ROLES = ("classifier", "classifier_fallback", "regressor", "regressor_fallback")


class DeploymentError(RuntimeError):
    """A version is missing, incomplete or fails its sha256 verification."""


class PointerMoved(DeploymentError):
    """The pointer changed since it was read (a rollback, a pin or another deployment in
    the meantime): ``pointer`` is what it names now."""

    def __init__(self, pointer: dict[str, Any] | None) -> None:
        self.pointer = pointer
        now = pointer["version"] if pointer else "nothing deployed"
        super().__init__(f"the deployed version changed meanwhile (now {now})")


def pointer_state(pointer: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What a change of the pointer changes: the version, when it was deployed, the pin."""
    if pointer is None:
        return None
    return (pointer.get("version"), pointer.get("updated_at"), pointer.get("pinned"))


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def new_version(storage: Storage, now: dt.datetime | None = None) -> str:
    """A fresh ``vYYYYMMDD-HHMMSS`` name (UTC); moves on a second if the name is taken."""
    now = now or dt.datetime.now(dt.UTC)
    while True:
        name = now.strftime("v%Y%m%d-%H%M%S")
        if not storage.exists(f"{ROOT}/versions/{name}/manifest.json"):
            return name
        now += dt.timedelta(seconds=1)


def version_dir(version: str) -> str:
    return f"{ROOT}/versions/{version}"


def write_version(
    storage: Storage, version: str, artifacts: dict[str, bytes], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Write the artifacts, verify each by reading it back, then write the manifest.

    Returns the manifest as written (with ``artifacts``: name → sha256 and size). The
    pointer is not touched: call :func:`set_current` afterwards. A write that fails (a full
    disk, storage refusing it) removes what it wrote of a new version before raising.
    """
    folder = version_dir(version)
    new = not storage.exists(folder)
    try:
        listing = {}
        for name, data in artifacts.items():
            rel = f"{folder}/{name}"
            storage.write_bytes(rel, data)
            digest = sha256(data)
            if sha256(storage.read_bytes(rel)) != digest:
                raise DeploymentError(f"artifact {rel} did not read back intact")
            listing[name] = {"sha256": digest, "bytes": len(data)}
        manifest = {**manifest, "version": version, "artifacts": listing}
        storage.write_json(f"{folder}/manifest.json", manifest)
    except BaseException:
        if new:  # a version without its manifest is never served: do not leave its parts
            with contextlib.suppress(Exception):
                storage.delete(folder, recursive=True)
        raise
    return manifest


def read_current(storage: Storage) -> dict[str, Any] | None:
    """The pointer (``version``, ``updated_at``, ``history``), or None if nothing is deployed."""
    if not storage.exists(POINTER):
        return None
    return storage.read_json(POINTER)


def recorded_versions(storage: Storage) -> set[str]:
    """Every version storage has recorded: those with a manifest, and those the pointer or
    its history names (retention may have removed their files since)."""
    pointer = read_current(storage)
    named = [pointer, *pointer.get("history", [])] if pointer else []
    return set(list_versions(storage)) | {e["version"] for e in named if e.get("version")}


def read_manifest(storage: Storage, version: str) -> dict[str, Any]:
    """The manifest of ``version`` (DeploymentError if absent or damaged: not a JSON
    object, so that readers treat it like a version that fails its verification)."""
    rel = f"{version_dir(version)}/manifest.json"
    if not storage.exists(rel):
        raise DeploymentError(f"version {version} has no manifest at {storage.url(rel)}")
    try:
        manifest = storage.read_json(rel)
    except ValueError as e:  # truncated or overwritten
        raise DeploymentError(f"version {version}: {e}") from e
    if not isinstance(manifest, dict):
        raise DeploymentError(
            f"version {version}: {storage.url(rel)} is not a JSON object (damaged?)"
        )
    return manifest


def list_versions(storage: Storage) -> list[str]:
    """Every version with a manifest, oldest first."""
    files = storage.list_files(f"{ROOT}/versions", "*/manifest.json")
    return sorted(f.split("/")[-2] for f in files)


def verify_version(storage: Storage, version: str) -> list[str]:
    """Problems with a version's artifacts (missing, size or sha256 mismatch); [] if intact."""
    manifest = read_manifest(storage, version)
    problems = []
    for name, meta in manifest.get("artifacts", {}).items():
        rel = f"{version_dir(version)}/{name}"
        if not storage.exists(rel):
            problems.append(f"{name}: missing")
            continue
        if sha256(storage.read_bytes(rel)) != meta["sha256"]:
            problems.append(f"{name}: sha256 mismatch")
    return problems


_KEEP = object()


def set_current(
    storage: Storage,
    version: str,
    reason: str,
    *,
    pinned: Any = _KEEP,
    expected: Any = _KEEP,
) -> dict[str, Any]:
    """Point ``current.json`` at ``version`` after verifying it; keeps a history.

    ``pinned`` (a version name, or None to unpin) is carried over from the previous
    pointer unless given: while a version is pinned, automatic promotion is off. With
    ``expected`` (the pointer as read when the move was decided, None for nothing
    deployed), a pointer that has changed since raises :class:`PointerMoved` and stays."""
    problems = verify_version(storage, version)
    if problems:
        raise DeploymentError(f"refusing to point at {version}: {'; '.join(problems)}")
    previous = read_current(storage)
    if expected is not _KEEP and pointer_state(previous) != pointer_state(expected):
        raise PointerMoved(previous)
    history = list(previous.get("history", [])) if previous else []
    if previous:
        history.append({k: previous[k] for k in ("version", "updated_at", "reason")})
    pointer = {
        "version": version,
        "manifest": f"versions/{version}/manifest.json",
        "updated_at": dt.datetime.now(dt.UTC).isoformat(),
        "reason": reason,
        "pinned": (previous or {}).get("pinned") if pinned is _KEEP else pinned,
        "history": history[-50:],
    }
    storage.write_json(POINTER, pointer)
    return pointer


def pinned_version(storage: Storage) -> str | None:
    """The pinned version (automatic promotion is off while one is pinned), or None."""
    current = read_current(storage)
    return (current or {}).get("pinned") or None


def unpin(storage: Storage) -> dict[str, Any]:
    """Turn automatic promotion back on. Only the pin changes: the deployed version and
    ``updated_at`` (when it was deployed, which the stale-deployment alert reads) stay."""
    current = read_current(storage)
    if current is None:
        raise DeploymentError("nothing is deployed: there is nothing to unpin")
    if not current.get("pinned"):
        return current
    pointer = {**current, "pinned": None}
    storage.write_json(POINTER, pointer)
    return pointer


def pin_current(storage: Storage) -> dict[str, Any]:
    """Pin the deployed version (automatic promotion off until :func:`unpin`). Only the
    pin changes: the deployed version and ``updated_at`` stay."""
    current = read_current(storage)
    if current is None:
        raise DeploymentError("nothing is deployed: there is nothing to pin")
    if current.get("pinned") == current["version"]:
        return current
    pointer = {**current, "pinned": current["version"]}
    storage.write_json(POINTER, pointer)
    return pointer


ROLLBACK_FROM = "rollback from "


def rolled_back_from(pointer: dict[str, Any] | None) -> set[str]:
    """The versions a rollback has moved away from (the pointer's and its history's
    reasons): a model of theirs is not deployed again by a promotion."""
    entries = [pointer, *pointer.get("history", [])] if pointer else []
    return {
        e["reason"][len(ROLLBACK_FROM) :].split()[0]
        for e in entries
        if str(e.get("reason", "")).startswith(ROLLBACK_FROM)
    }


def previous_version(pointer: dict[str, Any]) -> str:
    """The version served before the deployed one: the newest in the history that is
    neither the deployed version nor one a rollback moved away from. Rolling back twice goes
    two versions back (v3 → v2 → v1), never forward to the version just left."""
    skip = rolled_back_from(pointer) | {pointer["version"]}
    for entry in reversed(pointer.get("history", [])):
        if entry["version"] not in skip:
            return entry["version"]
    left = sorted(skip - {pointer["version"]})
    raise DeploymentError(
        f"{pointer['version']} is the only version ever deployed"
        if not left
        else f"nothing to roll back to: {pointer['version']} is the oldest version served "
        f"but those rolled back from ({', '.join(left)}); name one to go to it"
    )


def rollback(storage: Storage, to: str | None = None, *, pin: bool = True) -> dict[str, Any]:
    """Move the pointer back to ``to`` or, by default (or ``previous``), the version served
    before this one (:func:`previous_version`), and pin it (``pin=False`` leaves automatic
    promotion on)."""
    current = read_current(storage)
    if current is None:
        raise DeploymentError("nothing is deployed: there is nothing to roll back")
    if to in (None, "", "previous"):
        to = previous_version(current)
    if to == current["version"]:
        raise DeploymentError(f"{to} is already the deployed version")
    if to not in list_versions(storage):
        raise DeploymentError(not_stored(storage, to))
    return set_current(
        storage, to, reason=f"{ROLLBACK_FROM}{current['version']}", pinned=to if pin else None
    )


def version_rows(storage: Storage) -> list[dict[str, Any]]:
    """Every stored version, newest first: when it was made, its churn and value models
    (candidate and holdout figures; a role kept from an earlier version names it), and
    whether it is deployed, pinned, where a plain ``churn rollback`` goes, or was never
    deployed (written by a run whose pointer move a rollback had overtaken: newer than the
    oldest version the pointer's history names, and named by none of it)."""
    current = read_current(storage)
    served = {e["version"] for e in [current, *current.get("history", [])]} if current else set()
    target = None
    if current is not None:
        try:
            target = previous_version(current)
        except DeploymentError:
            target = None
    rows = []
    for version in reversed(list_versions(storage)):
        try:
            manifest = read_manifest(storage, version)
        except Exception as e:  # noqa: BLE001 - a damaged version is listed, saying so
            rows.append({"version": version, "problem": f"{type(e).__name__}: {e}"})
            continue
        models = manifest.get("models") or {}
        churn, value = models.get("classifier") or {}, models.get("regressor") or {}
        cm, vm = churn.get("metrics") or {}, value.get("metrics") or {}
        rows.append(
            {
                "version": version,
                "created_at": manifest.get("created_at"),
                "deployed": current is not None and current.get("version") == version,
                "pinned": current is not None and current.get("pinned") == version,
                "rollback_target": version == target,
                "never_deployed": bool(served) and version not in served and version > min(served),
                "churn_model": churn.get("candidate"),
                "churn_roc_auc": cm.get("roc_auc"),
                "churn_from": churn.get("from_version"),
                "value_model": value.get("candidate"),
                "value_r2_gain_vs_naive": vm.get("r2_gain_vs_naive"),
                "value_from": value.get("from_version"),
            }
        )
    return rows


def not_stored(storage: Storage, version: str) -> str:
    """Why ``version`` cannot be deployed: it was never a version here, or its files are
    gone (the pointer's history names it: retention removed it); lists the stored ones."""
    stored = list_versions(storage)
    listed = ", ".join(stored[-10:]) or "none"
    if version in recorded_versions(storage):
        return (
            f"{version} is no longer stored: it was deployed, but retention removed its "
            "files (retention_job keeps the newest CHURN_RETENTION_VERSIONS versions, the "
            f"deployed, pinned and rollback-target ones); stored versions: {listed}"
        )
    return f"unknown version {version}; known: {listed}"


def load_pipeline_bytes(storage: Storage, manifest: dict[str, Any], name: str) -> bytes:
    """An artifact's bytes, verified against the manifest's sha256."""
    meta = manifest["artifacts"].get(name)
    if meta is None:
        raise DeploymentError(f"manifest {manifest['version']} has no artifact {name}")
    data = storage.read_bytes(f"{version_dir(manifest['version'])}/{name}")
    if sha256(data) != meta["sha256"]:
        raise DeploymentError(f"{manifest['version']}/{name}: sha256 mismatch, refusing it")
    return data


def load_models(storage: Storage, manifest: dict[str, Any]) -> dict[str, Any]:
    """The deployed pipelines by role (classifier, regressor and their fallbacks)."""
    from churn_assets.lib.models.persistence import loads_pipeline

    out = {}
    for role in MODEL_ROLES:
        entry = manifest.get("models", {}).get(role)
        if entry:
            out[role] = loads_pipeline(load_pipeline_bytes(storage, manifest, entry["file"]))
    return out


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger replaces the deployed model of one role, and why.

    ``interval`` holds, per metric, the bootstrap interval of challenger minus deployed on
    the shared holdout (absent when nothing was compared)."""

    promote: bool
    reason: str
    deployed_version: str | None
    challenger: dict[str, float]
    deployed: dict[str, float] | None
    interval: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    challenger: dict[str, float],
    deployed: dict[str, float] | None,
    deployed_version: str | None,
    *,
    tolerance: float = 0.005,
    promote_ties: bool = False,
    min_margin: float = 0.0,
    interval: dict[str, tuple[float, float] | list[float]] | None = None,
) -> GateDecision:
    """The gate for one role (metrics are higher-is-better, measured on the same rows).

    Promote when nothing is deployed, or when on every shared metric the challenger is
    better than the deployed model by more than ``min_margin`` AND not possibly worse: the
    lower end of its paired-bootstrap ``interval`` of (challenger - deployed) stays above
    ``-tolerance`` (without an interval, the point difference is used). With
    ``promote_ties`` a challenger that is merely not possibly worse (fresher data, equal
    quality) is promoted too. Otherwise the deployed model is kept, and the reason says
    which metric held it back."""
    if deployed is None:
        return GateDecision(True, "nothing deployed yet", None, challenger, None)
    gains = {k: challenger[k] - deployed[k] for k in challenger if k in deployed}
    if not gains:
        return GateDecision(
            True,
            "deployed version not comparable on this holdout",
            deployed_version,
            challenger,
            deployed,
        )
    bounds = {
        k: [float(interval[k][0]), float(interval[k][1])] if interval and k in interval else [g, g]
        for k, g in gains.items()
    }

    def show(k: str) -> str:
        lo, hi = bounds[k]
        return (
            f"{k} {challenger[k]:.4f} vs {deployed[k]:.4f} "
            f"(diff {gains[k]:+.4f}, interval [{lo:+.4f}, {hi:+.4f}])"
        )

    text = ", ".join(show(k) for k in gains)
    possibly_worse = [k for k in gains if bounds[k][0] < -tolerance]
    not_better = [k for k in gains if gains[k] <= min_margin]
    if possibly_worse:
        return GateDecision(
            False,
            f"challenger may be worse by more than {tolerance} ({text})",
            deployed_version,
            challenger,
            deployed,
            bounds,
        )
    if not_better and promote_ties:
        return GateDecision(
            True,
            f"challenger as good, fresher ({text})",
            deployed_version,
            challenger,
            deployed,
            bounds,
        )
    if not_better:
        return GateDecision(
            False,
            (
                f"challenger not better by more than {min_margin} ({text})"
                if all(gains[k] > 0 for k in not_better)
                else f"challenger not better ({text})"
            ),
            deployed_version,
            challenger,
            deployed,
            bounds,
        )
    if all(bounds[k][0] > 0 for k in gains):
        verdict = "challenger better"
    else:  # ahead on the point estimate, and the interval allows no loss beyond tolerance
        verdict = f"challenger ahead, not worse by more than {tolerance} (the interval includes 0)"
    return GateDecision(True, f"{verdict} ({text})", deployed_version, challenger, deployed, bounds)
