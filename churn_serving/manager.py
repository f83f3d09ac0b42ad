"""Hot reload: poll the deployment pointer and swap model bundles atomically.

The serving state is ONE reference, :attr:`ModelManager.bundle`. A reload reads
``current.json``, loads and verifies the version it names into a new, complete
:class:`~churn_serving.model.ModelBundle` (every artifact's sha256, the models, their fast
paths, the customer table) and only then replaces the reference. A request reads the
reference once when it starts, so in-flight requests finish on the bundle they started with
and new requests see the new one; no request ever sees a half-loaded version.

After a swap the garbage collector is re-frozen (``gc.freeze``) so that the long-lived
objects do not make full collections stall requests.

A version that fails verification is refused: the current bundle keeps serving, the refusal
is kept for ``/health`` and counted in ``churn_serving_reload_failures_total``; polling does
not retry the same refused pointer while the version's files stay as they were (a forced
reload does). A version whose files change afterwards (a copy or sync that was still under
way) is verified again. Reloads are serialised by a lock.
The ``current_features`` table is polled too and swapped in on change (same models).

Right after a version is swapped in, its customer table is answered once (every customer
through the fallback chain, for id lookups) and the bundle is swapped again with those
answers; in between, lookups run the models per request. A new table is answered before it
is swapped in (the old one keeps its answers meanwhile).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import with_refusal
from churn_serving.drift_status import SERVED_PREFIX, SERVED_SUMMARY, DriftStatus
from churn_serving.model import (
    FEATURES_TABLE,
    FallbackStats,
    IntegrityError,
    ModelBundle,
    file_signature,
    load_bundle,
    load_customers,
    utcnow,
)
from churn_serving.schema import DEFAULT_SLACK
from churn_serving.version_status import VersionStatus

log = logging.getLogger("churn_serving.manager")


def _refreeze_gc() -> None:
    """Move every long-lived object (libraries, models) out of the cyclic GC's sight.

    Full collections otherwise walk hundreds of thousands of library and model objects and
    stall the event loop for tens of milliseconds (they were the p99 of /predict). The
    previous freeze is undone first so that the replaced bundle can be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelManager:
    """Owns the current :class:`ModelBundle` and reloads it (poll thread or on demand)."""

    def __init__(
        self,
        storage: Any,
        *,
        poll_seconds: float = 10.0,
        slack: float = DEFAULT_SLACK,
        metrics: Any = None,
        stats: FallbackStats | None = None,
        freeze_gc: bool = False,
        aliases: dict[str, str] | None = None,
        batch_threads: int = 1,
        precompute_lookups: bool = True,
    ):
        self.storage = storage
        self.precompute_lookups = precompute_lookups
        self.aliases = aliases
        self.batch_threads = batch_threads
        self.freeze_gc = freeze_gc
        self.poll_seconds = poll_seconds
        self.slack = slack
        self.metrics = metrics
        self.stats = stats or FallbackStats(metrics)
        self.bundle: ModelBundle | None = None
        self.last_reload: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self.last_refusal: dict[str, Any] | None = None
        self.deployed_version: str | None = None  # what current.json named at the last reload
        self.reloads = 0
        self._refused_key: tuple[Any, ...] | None = None
        self._last_logged: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = utcnow()
        # gauges the poll thread refreshes: latest drift summary, served version's age and lag
        registry = metrics.registry if metrics is not None else None
        self.drift = DriftStatus(storage, registry)
        self.served_drift = DriftStatus(
            storage, registry, summary=SERVED_SUMMARY, prefix=SERVED_PREFIX
        )
        self.version_status = VersionStatus(registry)

    # --------------------------------------------------------------------- polling

    def start(self) -> None:
        """Start the poll thread (its first iteration loads the deployed version)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="churn-model-poll", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        trigger = "startup"
        while not self._stop.is_set():
            try:
                result = self.reload(force=False, trigger=trigger)
                self.drift.refresh()
                self.served_drift.refresh()
                loaded = self.bundle.version if self.bundle is not None else None
                self.version_status.update(loaded, result.get("version"))
            except Exception:  # never let the poll thread die
                log.exception("reload failed unexpectedly")
            trigger = "poll"
            # Until a model is loaded, retry sooner (storage may come up after us).
            wait = self.poll_seconds if self.bundle is not None else min(self.poll_seconds, 2.0)
            self._stop.wait(wait)

    # ---------------------------------------------------------------------- reload

    def reload(self, force: bool = False, trigger: str = "admin") -> dict[str, Any]:
        """Load the version the pointer names if it differs from the loaded one (or always,
        with ``force``); swap it in when it verifies. Returns what happened:
        ``status`` is ``reloaded``, ``unchanged``, ``features_reloaded``, ``refused``
        (integrity) or ``failed`` (storage or other error)."""
        with self._lock:
            start = time.perf_counter()
            result = self._reload_locked(force, trigger)
            result["seconds"] = round(time.perf_counter() - start, 4)
            result["trigger"] = trigger
            result["at"] = utcnow()
            if result.get("version") is not None:
                self.deployed_version = result["version"]
            # a poll that reads the pointer again after a failed one replaces the failure:
            # /health went on showing "cannot read current.json: Could not connect …" as
            # the last reload long after storage was back
            failed = (self.last_reload or {}).get("status") == "failed"
            if result["status"] != "unchanged" or failed:
                self.last_reload = result
            return result

    def _fail(self, status: str, reason: str, message: str, version: str | None) -> dict[str, Any]:
        entry = {"status": status, "version": version, "error": message, "at": utcnow()}
        if status == "refused":
            self.last_refusal = entry
        else:
            self.last_error = entry
        if self.metrics is not None:
            self.metrics.reload_failures.labels(reason=reason).inc()
        # before the first deployment, waiting is the normal state: said once, then on change
        if reason != "nothing_deployed":
            log.error("reload %s: %s", status, message)
        elif self._last_logged != message and (self.bundle is not None or NO_BUCKET in message):
            log.warning("reload %s: %s", status, message)
        elif self._last_logged != message:
            log.info("reload %s: %s (waiting for a first deployment)", status, message)
        self._last_logged = message
        current = self.bundle.version if self.bundle else None
        return {**entry, "serving_version": current}

    def _nothing_deployed(self, current: Any) -> str:
        """Why no version is named: no pointer yet, a storage folder that does not exist, or
        a pointer gone while a version is served."""
        where = self.storage.url()
        bucket = None if self.storage.is_local else where.split("://", 1)[-1].split("/")[0]
        if self.storage.is_local and not self.storage.exists(""):
            text = (
                f"nothing deployed at {where}: the folder does not exist (nothing written there "
                "yet, or the storage URL points elsewhere)"
            )
        elif bucket and not _bucket_exists(self.storage.fs, bucket):
            text = (
                f"nothing deployed at {where}: {NO_BUCKET} {bucket!r} (create it, or fix "
                "CHURN_STORAGE_URL / CHURN_S3_ENDPOINT_URL)"
            )
        else:
            text = f"nothing deployed at {where}"
        if current is not None:
            text = (
                f"{dep.POINTER} is gone from {where}: still serving {current.version} (was the "
                "storage moved or deleted?)"
            )
        return text

    def _reload_locked(self, force: bool, trigger: str) -> dict[str, Any]:
        current = self.bundle
        try:
            pointer = dep.read_current(self.storage)
        except Exception as e:
            text = with_refusal(f"cannot read current.json: {e}", e)
            return self._fail("failed", "storage", text, None)
        if pointer is not None and not isinstance(pointer, dict):
            return self._fail(
                "failed",
                "storage",
                f"current.json at {self.storage.url(dep.POINTER)} is not a JSON object (a "
                f"{type(pointer).__name__}): it names no version",
                None,
            )
        if pointer is None or not pointer.get("version"):
            return self._fail("failed", "nothing_deployed", self._nothing_deployed(current), None)
        version = str(pointer["version"])
        self.last_error = None  # the pointer reads again; a failed load below says so anew
        # before any swap: a reader that sees the new bundle sees the version it came from
        self.deployed_version = version
        if current is not None and current.version == version and not force:
            return self._refresh_customers(current)
        # the files as they are before loading: a copy that completes meanwhile is retried
        key = (version, pointer.get("updated_at"), self._version_files(version))
        if not force and key == self._refused_key:
            return {
                "status": "refused",
                "version": version,
                "error": (self.last_refusal or {}).get("error"),
                "serving_version": current.version if current else None,
                "cached": True,
            }
        try:
            new = self._load(pointer, answer_now=False)
        except (IntegrityError, dep.DeploymentError) as e:
            self._refused_key = key
            refused = self._fail("refused", "integrity", str(e), version)
            if current is None:  # nothing served yet (a restart): the last intact version
                fallback = self._load_history(pointer, version, trigger)
                if fallback is not None:
                    return {**refused, **fallback}
            return refused
        except Exception as e:
            return self._fail("failed", "error", f"{type(e).__name__}: {e}", version)
        self._refused_key = None
        self._last_logged = None
        self.bundle = new  # the swap: one reference assignment
        self.reloads += 1
        if self.freeze_gc:
            _refreeze_gc()
        self.last_error = None
        if self.metrics is not None:
            self.metrics.reloads.labels(trigger=trigger).inc()
            models = new.manifest.get("models") or {}
            self.metrics.set_model(
                new.version,
                (models.get("classifier") or {}).get("candidate", ""),
                (models.get("regressor") or {}).get("candidate", ""),
            )
        log.info("serving version %s (was %s)", version, current.version if current else None)
        # then the customer table's answers (until they are in, lookups run the models)
        answered = new.answered()
        if answered is not new:
            self.bundle = answered
            info = answered.customers.answers_info if answered.customers else None
            log.info("version %s: customer table answered: %s", version, info)
        return {
            "status": "reloaded",
            "version": version,
            "previous_version": current.version if current else None,
            "degraded_roles": {r: e for r, e in new.role_errors.items() if e},
        }

    def _load(self, pointer: dict[str, Any], answer_now: bool = True) -> ModelBundle:
        """The version ``pointer`` names, loaded and verified with this sidecar's settings."""
        return load_bundle(
            self.storage,
            pointer,
            slack=self.slack,
            stats=self.stats,
            aliases=self.aliases,
            batch_threads=self.batch_threads,
            precompute_lookups=self.precompute_lookups,
            answer_now=answer_now,
        )

    def _load_history(
        self, pointer: dict[str, Any], refused: str, trigger: str
    ) -> dict[str, Any] | None:
        """Serve the newest intact version of the pointer's history when the version it
        names is refused and nothing is served (a sidecar started on a damaged version
        would otherwise answer 503 to everything). None when no earlier version loads."""
        seen = {refused}
        for entry in reversed(pointer.get("history") or []):
            version = str((entry or {}).get("version") or "")
            if not version or version in seen:
                continue
            seen.add(version)
            try:
                bundle = self._load({**entry, "version": version})
            except Exception as e:  # that one is damaged too: the one before it
                log.warning("fallback version %s not loadable either: %s", version, e)
                continue
            self.bundle = bundle
            self.reloads += 1
            if self.metrics is not None:
                self.metrics.reloads.labels(trigger=trigger).inc()
            log.error(
                "version %s refused; serving %s, the newest intact version before it, until "
                "%s is repaired or another version is deployed",
                refused,
                version,
                refused,
            )
            return {"serving_version": version, "fallback": True}
        return None

    def _version_files(self, version: str) -> tuple[Any, ...]:
        """The version's files as listed now; unreadable counts as unchanged (empty)."""
        try:
            return self.storage.fingerprint(dep.version_dir(version))
        except Exception:  # a listing error is reported by the load itself
            return ()

    def _refresh_customers(self, current: ModelBundle) -> dict[str, Any]:
        try:
            sig = file_signature(self.storage, FEATURES_TABLE)
        except Exception as e:
            return {"status": "unchanged", "version": current.version, "warning": str(e)}
        if sig == current.customers_signature:
            return {"status": "unchanged", "version": current.version}
        table, error, sig = load_customers(self.storage, current.schema)
        if table is None and current.customers is not None and sig is not None:
            # keep the old table when the new one is unusable, but say so
            self.bundle = current.with_customers(current.customers, error, sig)
        else:
            self.bundle = current.with_customers(table, error, sig)
        return {"status": "features_reloaded", "version": current.version, "error": error}

    # ----------------------------------------------------------------------- status

    def health(self) -> dict[str, Any]:
        """JSON-able state for /health."""
        b = self.bundle
        return {
            "version": b.version if b else None,
            "loaded_at": b.loaded_at if b else None,
            "ready": b is not None,
            "reloads": self.reloads,
            "last_reload": self.last_reload,
            "last_error": self.last_error,
            "last_refusal": self.last_refusal,
            "degraded_roles": {r: e for r, e in (b.role_errors if b else {}).items() if e},
            "customers": b.customers.describe() if b and b.customers else None,
            "customers_error": b.customers_error if b else None,
            "poll_seconds": self.poll_seconds,
            "storage": self.storage.url(),
        }


#: Said when the storage URL names a bucket the S3 endpoint does not have: logged as a
#: warning, since it does not come by itself as a first deployment does.
NO_BUCKET = "the endpoint has no bucket"


def _bucket_exists(fs: Any, bucket: str) -> bool:
    """Whether ``bucket`` exists on the object store (True when that cannot be told)."""
    try:
        fs.invalidate_cache(bucket)
        return bool(fs.exists(bucket))
    except Exception:  # unreachable or forbidden: the reload's own error says it
        return True
