"""The data sets the sidecar serves: the default one (``CHURN_DATASET``, also on the
un-prefixed routes) and the others under ``/datasets/{name}/...``.

Which others: every data set whose config loads and whose storage
(``<CHURN_STORAGE_URL>/<name>``) holds a deployment (``deployments/current.json``), looked for
at start-up and again every ``CHURN_SERVING_POLL_SECONDS``, so a data set deployed later is
served without a restart; or exactly the names of ``CHURN_SERVING_DATASETS`` (served from the
start: 503 until they have a loadable deployment). A data set, once served, stays served.

Each data set has its own :class:`~churn_serving.manager.ModelManager` (hot reload), its
inference log under its own storage and its own metrics; a broken one (refused or failing
deployment) answers 503 on its routes and leaves the others alone. Names from requests are
only looked up in the table of served data sets, never joined into a path; the candidate
names are the data set configs the platform knows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from churn_assets.lib import deployment as dep
from churn_serving.inference_log import InferenceLogger
from churn_serving.manager import ModelManager
from churn_serving.metrics import ServingMetrics

log = logging.getLogger("churn_serving.datasets")

#: Longest data set name echoed back in an error message.
MAX_ECHOED_NAME = 100


class ServingSettingError(ValueError):
    """A serving setting that names something that does not exist (``churn serve`` and
    ``churn-serve`` print it as one line)."""


@dataclass
class ServedDataset:
    """One served data set: its model manager, predict endpoint, inference log, metrics."""

    name: str
    manager: ModelManager
    endpoint: Any  # churn_serving.app.PredictEndpoint
    logger: InferenceLogger | None
    metrics: ServingMetrics
    default: bool = False

    def start(self) -> None:
        """Start the poll thread and the inference-log writer."""
        self.manager.start()
        if self.logger is not None:
            self.logger.start()

    def stop(self) -> None:
        """Stop polling and flush the inference log (blocking)."""
        self.manager.stop()
        if self.logger is not None:
            self.logger.close()

    def describe(self) -> dict[str, Any]:
        """Name, served version, the version ``current.json`` names, state and reason.

        ``state``: ``ready`` (serving the deployed version), ``behind`` (serving an older
        version: the deployed one was refused or failed to load), ``loading`` (nothing
        loaded yet, no error either) or ``unavailable`` (nothing loadable: ``reason``). A
        ``ready`` data set whose current_features table could not be used has a ``reason``
        too (``id lookups: …``): feature records are answered, id lookups are not current."""
        m = self.manager
        b = m.bundle
        deployed = m.deployed_version
        problem = m.last_refusal if m.last_refusal else m.last_error
        reason = (problem or {}).get("error")
        if b is not None:
            state = "behind" if deployed is not None and deployed != b.version else "ready"
            if state == "ready":  # the models serve; id lookups may not be current
                reason = f"id lookups: {b.customers_error}" if b.customers_error else None
        else:
            state = "unavailable" if problem else "loading"
        return {
            "name": self.name,
            "default": self.default,
            "version": b.version if b is not None else None,
            "deployed_version": deployed,
            "state": state,
            "reason": reason,
            "loaded_at": b.loaded_at if b is not None else None,
        }


# ---------------------------------------------------------------- config look-ups


def known_names(default: str | None = None) -> list[str]:
    """The data set config names the platform knows (built-in configs, those in
    ``CHURN_DATASETS_DIR``, and the default)."""
    from churn_assets.lib.datasets import known_names as config_names

    names = set(config_names())
    if default:
        names.add(default)
    return sorted(names)


def config_name(name_or_path: str) -> str:
    """The ``name`` of a data set config (by built-in name or YAML path); raises
    ``DatasetConfigError`` when it does not load."""
    from churn_assets.lib.datasets import load_dataset_config

    return load_dataset_config(name_or_path).name


def parse_names(raw: str | None) -> list[str] | None:
    """``CHURN_SERVING_DATASETS`` as a list (None when unset or blank: every deployed one)."""
    if raw is None or not raw.strip():
        return None
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if name and name not in names:
            names.append(name)
    return names or None


def echo(name: str) -> str:
    """A request's data set name, shortened for an error message."""
    return name if len(name) <= MAX_ECHOED_NAME else name[:MAX_ECHOED_NAME] + "..."


# ----------------------------------------------------------------------- registry


class DatasetRegistry:
    """The served data sets by name, and the poll thread that finds newly deployed ones.

    ``served`` is replaced, never mutated, so request handlers read it without a lock.
    ``make(name)`` builds a data set (its storage is ``root.child(name)``); without a
    ``root`` only the default is served."""

    def __init__(
        self,
        default: ServedDataset,
        *,
        root: Any = None,
        make: Callable[[str], ServedDataset] | None = None,
        only: list[str] | None = None,
        poll_seconds: float = 10.0,
    ):
        self.default = default
        self.root = root
        self.make = make
        self.only = only
        self.poll_seconds = poll_seconds
        self.served: dict[str, ServedDataset] = {default.name: default}
        self.skipped: dict[str, str] = {}  # candidate → why it is not served (said once)
        self.background = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if only is not None:
            unknown = [n for n in only if n not in known_names(default.name)]
            if unknown:
                raise ServingSettingError(
                    f"CHURN_SERVING_DATASETS names unknown data sets {unknown}: known ones are "
                    f"{known_names(default.name)}"
                )
            broken = {n: self._why_not(n) for n in only if n != default.name}
            broken = {n: why for n, why in broken.items() if why}
            if broken:  # named to be served: a config that does not load is not waited for
                raise ServingSettingError(
                    "CHURN_SERVING_DATASETS names data sets that cannot be served: "
                    + "; ".join(f"{n}: {why}" for n, why in broken.items())
                )

    # -------------------------------------------------------------------- queries

    def get(self, name: str) -> ServedDataset | None:
        """The served data set called ``name`` (None if it is not served)."""
        return self.served.get(name)

    def names(self) -> list[str]:
        """Names of the served data sets, the default first."""
        return [self.default.name] + sorted(n for n in self.served if n != self.default.name)

    def others(self) -> dict[str, ServedDataset]:
        """The served data sets other than the default."""
        return {n: d for n, d in self.served.items() if not d.default}

    def other_metrics(self) -> dict[str, ServingMetrics]:
        """Metrics of the served data sets other than the default, by name."""
        return {n: d.metrics for n, d in self.served.items() if not d.default}

    def metrics_of(self, name: str) -> ServingMetrics | None:
        """The own metrics of a further served data set (None for the default / unknown)."""
        d = self.served.get(name)
        return d.metrics if d is not None and not d.default else None

    def not_served(self, name: str) -> dict[str, Any]:
        """The 404 body for ``name``: why it is not served, and which data sets are."""
        served = self.names()
        if name not in known_names(self.default.name):
            detail = f"unknown data set {echo(name)!r}"
        elif self.only is not None:
            detail = f"data set {name!r} is not served (CHURN_SERVING_DATASETS)"
        else:
            why = self.skipped.get(name) or "nothing deployed"
            detail = f"data set {name!r} is not served: {why}"
        return {"detail": f"{detail}; served data sets: {', '.join(served)}", "served": served}

    def describe(self) -> list[dict[str, Any]]:
        """Every served data set's :meth:`ServedDataset.describe`, the default first."""
        return [self.served[n].describe() for n in self.names()]

    # ------------------------------------------------------------------ discovery

    def candidates(self) -> list[str]:
        """The names that may be served besides the default."""
        names = self.only if self.only is not None else known_names()
        return [n for n in names if n != self.default.name]

    def refresh(self) -> list[str]:
        """Serve every candidate that is not served yet and qualifies (its config loads and,
        without ``CHURN_SERVING_DATASETS``, its storage holds a deployment); returns the
        names added."""
        if self.root is None or self.make is None:
            return []
        added: list[str] = []
        waiting = [n for n in self.candidates() if n not in self.served]
        if len(waiting) > 1:  # side by side: an unreachable storage costs its timeout once
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(8, len(waiting))) as pool:
                whys = dict(zip(waiting, pool.map(self._why_not, waiting), strict=True))
        else:
            whys = {n: self._why_not(n) for n in waiting}
        for name in waiting:
            why = whys[name]
            if why is not None:
                if self.skipped.get(name) != why:
                    quiet = why == "nothing deployed"  # waiting for a first version
                    (log.info if quiet else log.warning)("data set %s not served: %s", name, why)
                self.skipped[name] = why
                continue
            try:
                served = self.make(name)
            except Exception as e:  # one data set never stops the others
                why = f"cannot be served: {type(e).__name__}: {e}"
                if self.skipped.get(name) != why:
                    log.exception("data set %s %s", name, why)
                self.skipped[name] = why
                continue
            with self._lock:
                if self._stop.is_set() and self.background:
                    return added
                self.served = {**self.served, name: served}
                if self.background:
                    served.start()
            self.skipped.pop(name, None)
            added.append(name)
            log.info("serving data set %s under /datasets/%s", name, name)
        return added

    def _why_not(self, name: str) -> str | None:
        try:
            if (named := config_name(name)) != name:
                return (
                    f"the file {name}.yaml holds the config of data set {named!r}: a config "
                    f"is found by its name, so save it as {named}.yaml (or set its name to "
                    f"{name!r})"
                )
        except Exception as e:
            return f"config does not load: {e}"
        if self.only is not None:
            return None
        try:
            if not self.root.child(name).exists(dep.POINTER):
                return "nothing deployed"
        except Exception as e:
            return f"storage unreadable: {type(e).__name__}: {e}"
        return None

    # -------------------------------------------------------------------- threads

    def start(self) -> None:
        """Find the data sets to serve now, start them, and keep looking (poll thread)."""
        self.background = True
        self._stop.clear()
        self.default.start()
        self.refresh()
        if self.root is not None and self.make is not None and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="churn-dataset-poll", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # never let the poll thread die
                log.exception("looking for deployed data sets failed")

    def stop(self) -> None:
        """Stop looking, then stop every data set (flushes their inference logs)."""
        with self._lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        for d in self.served.values():
            try:
                d.stop()
            except Exception:
                log.exception("stopping data set %s failed", d.name)
