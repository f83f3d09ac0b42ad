"""Run-time settings read from the environment (never at import time of the code location).

One switch, ``CHURN_ENV``, picks the profile: ``local`` (embedded default: a directory under
the working directory, SQLite MLflow store) or ``compose`` (MinIO + MLflow server as named in
docker-compose.yml). Every other variable overrides the profile's default.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

COMPOSE_DEFAULTS = {
    "storage_url": "s3://churn/storage",
    "s3_endpoint_url": "http://minio:9000",
    "mlflow_tracking_uri": "http://mlflow:5000",
}


#: What ``CHURN_MLFLOW_NAMESPACE`` takes: it starts experiment and registered model names.
NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class SettingError(ValueError):
    """A setting's value cannot be used; the message names the variable and the value."""


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is on (``1``, ``true``, ``yes``, ``on``, in
    any case): ``0``, ``false`` or an empty value are off."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_number(name: str, default: float, kind: type = int, minimum: float | None = None) -> Any:
    """The number in the environment variable ``name`` (``default`` when unset or blank).
    Anything else than a finite number of ``kind`` at least ``minimum`` is a
    :class:`SettingError` naming the variable, the value and what it takes."""
    import math

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    what = "a whole number" if kind is int else "a number"
    if minimum is not None:
        what += f" of at least {minimum:g}"
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or (minimum is not None and value < minimum):
        raise SettingError(f"{name}={raw!r}: it takes {what} (unset: {default:g})")
    return value


#: A landing file modified less than this many seconds ago is still being written.
DEFAULT_SETTLE_SECONDS = 10.0


def landing_settle_seconds() -> float:
    """``CHURN_LANDING_SETTLE_SECONDS`` (default :data:`DEFAULT_SETTLE_SECONDS`): a landing
    file changed more recently is still being written (a slow copy) and left for a later
    tick of the landing sensor, so that no half-written file is ingested."""
    return env_number("CHURN_LANDING_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS, float, minimum=0)


#: How long a queued or running landing run holds retraining back (run monitoring's
#: ``max_runtime_seconds`` in dagster.yaml: a run still going after that is stuck).
DEFAULT_LANDING_WAIT_SECONDS = 7200


def landing_wait_seconds() -> int:
    """``CHURN_LANDING_WAIT_SECONDS`` (default :data:`DEFAULT_LANDING_WAIT_SECONDS`): a
    retraining waits for a landing run of its data set queued or started less than this
    long ago (it is writing the raw tables); an older one is taken as stuck."""
    return env_number("CHURN_LANDING_WAIT_SECONDS", DEFAULT_LANDING_WAIT_SECONDS, int, minimum=0)


def landing_sensor_seconds() -> int:
    """``CHURN_LANDING_SENSOR_SECONDS``: the landing sensor's interval (default 30)."""
    return env_number("CHURN_LANDING_SENSOR_SECONDS", 30, int, minimum=1)


#: Environment-variable prefix of each settings model, for messages naming the variable.
ENV_PREFIXES = {"ChurnSettings": "CHURN_", "ServingSettings": "CHURN_SERVING_"}


def validation_message(e: ValidationError) -> str:
    """One line per wrong value of a settings model, naming its environment variable and
    value: ``CHURN_ENV='Local': Input should be 'local' or 'compose'``."""
    prefix = ENV_PREFIXES.get(e.title)
    parts = []
    for err in e.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = ".".join(str(x) for x in err["loc"])
        if not field:  # a check across fields: its message names them
            parts.append(msg)
        elif prefix:
            name = f"{prefix}{field.upper()}"
            parts.append(f"{name}={os.environ.get(name, err.get('input'))!r}: {msg}")
        else:
            parts.append(f"{field}={err.get('input')!r}: {msg}")
    return "; ".join(parts)


class ChurnSettings(BaseSettings):
    """Platform settings; every field maps to an environment variable prefixed ``CHURN_``."""

    model_config = SettingsConfigDict(env_prefix="CHURN_", extra="ignore")

    env: Literal["local", "compose"] = "local"
    storage_url: str | None = Field(
        default=None, description="Storage root: a directory or s3://bucket/prefix."
    )
    landing_url: str | None = Field(
        default=None, description="Landing zone root; default <storage_url>/landing."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto); default AWS."
    )
    dataset: str = Field(default="synthetic", description="Data set config name or YAML path.")
    real_data_dir: str = Field(
        default="../shared/data", description="Where the real-data configs find their files."
    )
    mlflow_tracking_uri: str | None = Field(default=None)
    mlflow_namespace: str | None = Field(
        default=None,
        description="This platform's name among platforms sharing one MLflow server: "
        "prefixes its experiments and registered model names.",
    )
    seed: int = 42
    realized_margin: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="realized_roc_auc_holds fails when the realized ROC-AUC is more than "
        "this below the deployment-time (holdout) ROC-AUC.",
    )

    @field_validator("storage_url", "landing_url", "s3_endpoint_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """An empty value (a blank line of a template or ``.env``) means the default."""
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("mlflow_namespace", mode="before")
    @classmethod
    def _namespace_is_a_name(cls, value: Any) -> Any:
        """A name that can start MLflow experiment and model names (``staging``, ``prod-eu``)."""
        if isinstance(value, str):
            value = value.strip() or None
        if value is not None and not NAMESPACE.fullmatch(str(value)):
            raise ValueError(
                "it takes a short name of lower-case letters, digits, '-' and '_' starting "
                "with a letter or digit (e.g. staging, prod-eu); unset: the plain names "
                "churn-<data set>, <data set>-churn-classifier"
            )
        return value

    @cached_property
    def resolved_storage_url(self) -> str:
        """The storage root as an absolute local path or a URL."""
        url = self.storage_url
        if url is None:
            url = COMPOSE_DEFAULTS["storage_url"] if self.env == "compose" else ".churn/storage"
        return _absolute(url, "CHURN_STORAGE_URL")

    @cached_property
    def resolved_landing_url(self) -> str:
        """The landing zone root (one sub-folder per data set)."""
        if self.landing_url:
            return _absolute(self.landing_url, "CHURN_LANDING_URL")
        return join_url(self.resolved_storage_url, "landing")

    @cached_property
    def resolved_s3_endpoint_url(self) -> str | None:
        """Endpoint for S3-compatible storage, if any (``AWS_ENDPOINT_URL`` is honoured too)."""
        import os

        if self.s3_endpoint_url:
            return self.s3_endpoint_url
        if os.environ.get("AWS_ENDPOINT_URL"):
            return os.environ["AWS_ENDPOINT_URL"]
        return COMPOSE_DEFAULTS["s3_endpoint_url"] if self.env == "compose" else None

    def storage_options(self, url: str | None = None) -> dict:
        """fsspec storage options for ``url`` (default: the storage root)."""
        url = url or self.resolved_storage_url
        if not url.startswith("s3://"):
            return {}
        opts: dict = {}
        if self.resolved_s3_endpoint_url:
            opts["client_kwargs"] = {"endpoint_url": self.resolved_s3_endpoint_url}
        return opts


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def _absolute(url: str, variable: str) -> str:
    """A storage URL (scheme lower-cased, no trailing slash) or an absolute local path;
    ``file:///abs`` is the local path ``/abs``. A URL missing a slash (``s3:/bucket``) or a
    relative ``file://`` URL is refused rather than read as a folder of that name."""
    scheme = _SCHEME.match(url)
    if scheme and "://" not in url:
        raise SettingError(
            f"{variable}={url!r} looks like a URL missing a slash: write "
            f"{scheme.group(1).lower()}://bucket/prefix (or a local path without a colon)"
        )
    if "://" in url:
        proto, rest = url.split("://", 1)
        if proto.lower() == "file":
            if not rest.startswith("/"):
                raise SettingError(
                    f"{variable}={url!r}: a file:// URL takes an absolute path "
                    f"(file:///{rest}), or give the path itself"
                )
            return str(Path(rest).resolve())
        return f"{proto.lower()}://{rest}".rstrip("/")
    return str(Path(url).expanduser().resolve())


def join_url(base: str, *parts: str) -> str:
    """Join path segments onto a local path or URL with forward slashes."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def get_settings() -> ChurnSettings:
    """Read the settings from the current environment."""
    return ChurnSettings()
