"""Settings of the serving sidecar (environment variables prefixed ``CHURN_SERVING_``).

Storage root, S3 endpoint and data set come from the platform's
:class:`~churn_assets.lib.settings.ChurnSettings` (``CHURN_STORAGE_URL``,
``CHURN_S3_ENDPOINT_URL``, ``CHURN_DATASET``); everything specific to serving is here.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """Sidecar settings; each field maps to ``CHURN_SERVING_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CHURN_SERVING_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port.")
    poll_seconds: float = Field(
        default=10.0, gt=0, description="How often current.json (and current_features) is polled."
    )
    admin_token: str | None = Field(
        default=None, description="Bearer token for /admin/*; unset or empty disables them (404)."
    )
    max_records: int = Field(default=10_000, ge=1, description="Records per /predict request.")
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    request_read_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A request (headers and body) has to arrive whole within this many seconds "
        "of its first byte, else the connection is closed (408): slow clients cannot hold "
        "connections open. How long the answer takes is not limited.",
    )
    range_slack: float = Field(
        default=10.0,
        ge=0,
        description="Numeric values are accepted within [min - k*width, max + k*width] of the "
        "training range (k = range_slack), and never below 0 when the training minimum is >= 0.",
    )
    log_enabled: bool = Field(default=True, description="Write the inference log.")
    log_flush_records: int = Field(default=10_000, ge=1, description="Flush after N records.")
    log_flush_seconds: float = Field(default=10.0, gt=0, description="... or after T seconds.")
    log_max_buffer_records: int = Field(
        default=200_000, ge=1, description="Bounded buffer while storage is down; oldest dropped."
    )
    inline_max_records: int = Field(
        default=64,
        ge=0,
        description="Requests up to this many records are scored on the event loop; larger "
        "ones in a worker thread so that small requests are not held up.",
    )
    access_log: bool = Field(default=False, description="uvicorn access log.")
    threads: int = Field(
        default=1,
        ge=1,
        description="BLAS/OpenMP threads of scikit-learn pipelines (models without a verified "
        "ONNX graph).",
    )
    batch_threads: int = Field(
        default=2,
        ge=1,
        description="ONNX Runtime intra-op threads for batches of >= 256 records (they run in "
        "a worker thread; smaller requests always predict on one thread). 1 disables.",
    )

    precompute_lookups: bool = Field(
        default=True,
        description="Answer every customer of the current_features table when the version or "
        "the table is loaded (off the request path, one thread), so that id lookups index the "
        "answers instead of calling the models. Off: lookups run the models per request.",
    )

    datasets: str | None = Field(
        default=None,
        description="Comma-separated data set names served under /datasets/{name}/ besides "
        "the default (CHURN_DATASET), served from the start (503 until deployed). Unset: "
        "every data set whose config loads and whose storage holds a deployment, looked for "
        "again every poll_seconds.",
    )

    @field_validator("host", mode="before")
    @classmethod
    def _host_or_default(cls, value: object) -> object:
        """An empty bind address (a blank line of a template) means the default, loopback:
        given to uvicorn, it would listen on every interface."""
        if isinstance(value, str):
            value = value.strip()
            return value or "127.0.0.1"
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _token_stripped(cls, value: object) -> object:
        """A token read from a secret file ends in a newline; the header's is stripped too,
        so the configured one is compared without its surrounding whitespace."""
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _buffer_holds_a_flush(self) -> ServingSettings:
        """The inference log's buffer holds what arrives between two flushes: a limit below
        one flush (or one request) would drop records while storage is fine."""
        need = max(self.log_flush_records, self.max_records)
        if self.log_enabled and self.log_max_buffer_records < need:
            raise ValueError(
                f"CHURN_SERVING_LOG_MAX_BUFFER_RECORDS={self.log_max_buffer_records} is below "
                f"what arrives between two flushes (CHURN_SERVING_LOG_FLUSH_RECORDS="
                f"{self.log_flush_records}, CHURN_SERVING_MAX_RECORDS={self.max_records} per "
                f"request): records would be dropped while storage is fine; set it to at "
                f"least {need}"
            )
        return self

    @property
    def admin_enabled(self) -> bool:
        """Whether the admin endpoints exist (a non-empty token is configured)."""
        return bool(self.admin_token)
