"""Data set configs: a data set is described by a small YAML file, not by code.

A config names where the raw files are and how their columns map onto the platform's two
raw tables (``customers`` and ``transactions``), and where the labels come from: label
columns (snapshot data) or purchases after a cut-off over a horizon (transaction data).
See ``docs/datasets.md`` for the format and ``churn_assets/datasets/*.yaml`` for examples.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "datasets"

ColumnType = Literal["string", "categorical", "numeric", "integer", "boolean", "date", "datetime"]


class DatasetConfigError(ValueError):
    """A data set config is missing, unreadable or invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    """One typed column: ``source`` is the raw file's column, ``name`` the platform's."""

    name: str
    source: str | None = None
    type: ColumnType = "categorical"
    format: str | None = Field(default=None, description="strptime format for date/datetime")
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    true_values: list[str] = Field(default_factory=lambda: ["1", "true", "yes", "y", "t"])
    blank_as_null: bool = True

    @property
    def raw(self) -> str:
        return self.source or self.name


def is_time_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone (``Europe/London``, ``UTC``)."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class SourceSpec(_Strict):
    """Where a table's raw files are: a file, a directory or a glob."""

    path: str = Field(description="Relative paths are under the landing zone's data set folder.")
    format: Literal["auto", "csv", "parquet", "excel", "json"] = Field(
        default="auto",
        description="'auto' tells by the file's first bytes and name (gzip, bzip2, xz and "
        "one-file zip compression are unpacked whatever the format).",
    )
    encoding: Literal["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"] = "utf-8"
    separator: str = ","
    decimal: Literal[".", ","] = Field(
        default=".", description="Decimal mark of numbers in CSV files ('1234,56' needs ',')."
    )
    thousands: Literal["", ".", ",", " ", "'"] = Field(
        default="",
        description="Thousands separator removed from numbers in CSV files ('1.234,56' needs "
        "'.' with decimal ','; ' ' also removes no-break spaces).",
    )

    sheet: str | int | list[str | int] | None = Field(
        default=None,
        description="Spreadsheets: the sheet's name or 0-based index, a list of them, or '*' "
        "for every sheet (stacked; same columns); the first sheet when omitted.",
    )
    skip_rows: int = Field(
        default=0, ge=0, description="Lines above the header row (a title, notes) to skip."
    )
    timezone: str | None = Field(
        default=None,
        description="The IANA time zone (Europe/London) the table's date-times are local "
        "to: they are converted to UTC, daylight saving time included. Date-times with a UTC "
        "offset and numbers since 1970 are UTC already and stay as they are.",
    )

    @model_validator(mode="after")
    def _number_marks_differ(self) -> SourceSpec:
        if self.thousands == self.decimal:
            raise ValueError(f"'thousands' and 'decimal' must differ (both {self.decimal!r})")
        if self.timezone is not None and not is_time_zone(self.timezone):
            raise ValueError(
                f"timezone {self.timezone!r} is not an IANA time zone name "
                "(e.g. 'Europe/London', 'America/New_York', 'UTC')"
            )
        for fmt in self._formats():
            if fmt and re.search(r"%#?Z", fmt):
                raise ValueError(
                    f"format {fmt!r}: %Z reads a time zone name without applying it (the times "
                    "would stay local). Write the name as text in the format ('%Y-%m-%d "
                    "%H:%M:%S Europe/Berlin') and set timezone: Europe/Berlin; a file with "
                    "several zone names needs its times written with UTC offsets (%z)"
                )
        return self

    def _formats(self) -> list[str | None]:
        """The strptime formats this table's config names."""
        return []


class CustomersSpec(SourceSpec):
    """The customer table: one row per customer."""

    def _formats(self) -> list[str | None]:
        columns = [self.signup_date, self.latest_by, *self.attributes]
        return [c.format for c in columns if isinstance(c, ColumnSpec)]

    id_column: str | None = None
    row_ids: bool = Field(
        default=False,
        description="The table has no customer id: the row number (from 1, over the files "
        "in name order) is the id. A later snapshot must keep the row order.",
    )
    signup_date: ColumnSpec | None = None
    attributes: list[ColumnSpec] = Field(default_factory=list)
    latest_by: ColumnSpec | Literal["file"] | None = Field(
        default=None,
        description="A table with rows per customer over time (customer-months, repeated "
        "snapshots): each customer's row with the latest value of this column is kept. "
        "'file': a folder of full snapshot exports without a date column, each customer's "
        "rows from the last file (in name order) that holds the customer are kept.",
    )


class TransactionsSpec(SourceSpec):
    """The transaction table: customer id, timestamp and amount (or quantity x unit price)."""

    def _formats(self) -> list[str | None]:
        return [self.timestamp_format]

    customer_id: str
    timestamp: str
    timestamp_format: str | None = None
    amount: str | None = None
    quantity: str | None = None
    unit_price: str | None = None
    invoice_id: str | None = None
    cancellation_prefix: str | None = Field(
        default=None, description="Invoice ids with this prefix are returns/cancellations."
    )
    category: str | None = None
    country: str | None = None
    amount_scale: float = Field(
        default=1.0,
        gt=0,
        description="Amounts (or unit prices) are multiplied by this as they are read: 0.01 "
        "for amounts in cents, as payment APIs (Stripe, Chargebee, Adyen) export them. "
        "min_amount and max_amount apply to the scaled amounts.",
    )
    min_amount: float = -1_000_000.0
    max_amount: float = 1_000_000.0
    customer_id_required_fraction: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of rows that must name a customer (the others are quarantined).",
    )
    activity_only: bool = Field(
        default=False,
        description="The lines are activity events without money (logins, sessions, app "
        "opens): each counts as 1 in the spend features, and no value model is trained.",
    )
    exit_events: list[str] = Field(
        default_factory=list,
        description="Category values that mean the customer left (an event log's "
        "'Cancellation Confirmation'): a customer with one before the cut-off is left out "
        "of training, scoring and serving, and one in the horizon labels the customer "
        "churned even when active before it.",
    )

    @model_validator(mode="after")
    def _amount_given(self) -> TransactionsSpec:
        if self.exit_events and not self.category:
            raise ValueError(
                "exit_events are values of the category column: set 'category' (the event "
                "type column) too"
            )
        money = [k for k in ("amount", "quantity", "unit_price") if getattr(self, k)]
        if self.activity_only and (money or self.amount_scale != 1.0):
            raise ValueError(
                "activity_only lines have no amount: drop "
                f"{', '.join(money + ['amount_scale'] * (self.amount_scale != 1.0))}, or drop "
                "activity_only"
            )
        if not self.activity_only and not (self.amount or (self.quantity and self.unit_price)):
            raise ValueError(
                "give 'amount', or both 'quantity' and 'unit_price'; for events without "
                "money (logins, sessions), set 'activity_only: true'"
            )
        return self


class LabelFileSpec(SourceSpec):
    """Snapshot labels in a file of their own (a CRM export of cancellations, a competition's
    ``train.csv``): one row per customer, joined to the customer table by id."""

    id_column: str | None = Field(
        default=None, description="Its customer id column; default: the customer table's."
    )


class LabelsSpec(_Strict):
    """Where labels come from: columns of the customer table, or transactions after a cut-off."""

    source: Literal["columns", "transactions"]
    churned_column: str | None = None
    churned_positive: list[str] = Field(default_factory=lambda: ["Yes", "yes", "1", "True", "true"])
    churned_negative: list[str] | None = Field(
        default=None,
        description="Snapshot data: the label values that mean retained. Default: every "
        "value not in churned_positive, which must then be one value (a third one, "
        "'Unknown', is refused). Set, a value in neither list is no label: the row is "
        "scored but not trained on with allow_unlabelled, else it fails the checks.",
    )
    total_sales_column: str | None = None
    cutoff: dt.date | None = Field(
        default=None, description="Default: the last transaction date minus the horizon."
    )
    horizon_days: int = Field(default=90, gt=0)
    naive_lookback_days: int | None = Field(
        default=None, gt=0, description="Spend window of the naive forecast; default 3 x horizon."
    )
    file: LabelFileSpec | None = Field(
        default=None,
        description="Snapshot data: read churned_column (and total_sales_column) from this "
        "file, joined by customer id, instead of from the customer table.",
    )
    allow_unlabelled: bool = Field(
        default=False,
        description="Snapshot data: rows with a blank churn label are customers whose outcome "
        "is not known yet; they are scored and served but not trained on. Default: a blank "
        "label fails the raw table's checks.",
    )
    active_within_days: int | None = Field(
        default=None,
        gt=0,
        description="Transaction data: only customers with a purchase (or, never having "
        "bought, a sign-up) in the N days before a cut-off are trained on, scored and served; "
        "the others have lapsed already. Default: every customer known before the cut-off.",
    )

    @model_validator(mode="after")
    def _columns_given(self) -> LabelsSpec:
        if self.source == "columns" and not self.churned_column:
            raise ValueError(
                "labels.source 'columns' needs 'churned_column': every data set trains a "
                "churn model (a value label alone, 'total_sales_column', is not enough; "
                "value-only data sets are not supported)"
            )
        if self.source != "columns" and self.file is not None:
            raise ValueError(
                "labels.file needs labels.source 'columns': transaction data derives every "
                "label from the purchases after the cut-off"
            )
        if self.source != "columns" and self.churned_negative is not None:
            raise ValueError(
                "labels.churned_negative needs labels.source 'columns': transaction data "
                "derives every label from the purchases after the cut-off"
            )
        if self.source != "columns" and self.allow_unlabelled:
            raise ValueError(
                "labels.allow_unlabelled needs labels.source 'columns': transaction data "
                "derives every label from the purchases after the cut-off"
            )
        if self.source == "columns" and self.active_within_days is not None:
            raise ValueError(
                "labels.active_within_days needs labels.source 'transactions': a snapshot "
                "table has no purchases to tell an active customer by"
            )
        return self


class ModelsSpec(_Strict):
    """How the model sets are trained, compared and gated."""

    classification_metric: Literal["roc_auc", "pr_auc", "f1"] = "roc_auc"
    regression_metric: Literal["r2"] = "r2"
    classification_candidates: list[str] | None = None
    regression_candidates: list[str] | None = None
    cv_folds: int = Field(
        default=5, ge=0, le=20, description="Cross-validation folds of the finalists (0: off)."
    )
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    temporal_validation: bool = Field(
        default=True,
        description="Transaction data: train on an earlier cut-off, validate on a later one.",
    )
    min_roc_auc: float = Field(default=0.70, ge=0, le=1, description="Deployment floor.")
    value_must_beat_naive: bool = True
    gate_tolerance: float = Field(
        default=0.005,
        ge=0,
        le=0.5,
        description="Gate: a challenger whose paired-bootstrap interval of (challenger - "
        "deployed) reaches below -tolerance may be worse: it is kept out (the metrics are "
        "0..1: at most 0.5).",
    )
    gate_min_margin: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="Gate: the challenger's primary metric must beat the deployed model's "
        "by more than this margin (point estimate on the shared holdout; at most 0.5: a "
        "larger one would never promote again).",
    )
    gate_confidence: float = Field(
        default=0.9, gt=0, lt=1, description="Gate: two-sided level of the bootstrap interval."
    )
    gate_bootstrap: int = Field(
        default=500, ge=50, le=10_000, description="Gate: paired bootstrap resamples."
    )
    promote_ties: bool = Field(
        default=False,
        description="Promote a fresher challenger that is not worse by more than the tolerance.",
    )

    @model_validator(mode="after")
    def _check_candidates(self) -> ModelsSpec:
        """Candidate lists and folds that cannot train are refused when the config loads,
        not after ingestion and the other model set."""
        from churn_assets.lib.models.candidates import candidate_list_problem

        for kind, names in (
            ("classification", self.classification_candidates),
            ("regression", self.regression_candidates),
        ):
            problem = None if names is None else candidate_list_problem(kind, names)
            if problem:
                raise ValueError(f"{kind}_candidates: {problem}")
        if self.cv_folds == 1:
            raise ValueError("cv_folds: 1 fold is no cross-validation: use 0 (off) or 2 or more")
        return self


class DriftSpec(_Strict):
    """Drift thresholds: a feature drifts past these; the verdict needs a share of them."""

    psi: float = Field(default=0.2, gt=0, description="numeric features: PSI above this")
    l1: float = Field(default=0.2, gt=0, lt=2, description="categorical: L1 distance (0..2) above")
    js: float = Field(
        default=0.1, gt=0, lt=1, description="categorical: Jensen-Shannon (0..1) above"
    )
    prediction_psi: float = Field(default=0.2, gt=0, description="predictions: PSI above this")
    share_drifted: float = Field(
        default=0.3, ge=0, le=1, description="verdict: share of drifted features above this"
    )
    severe_psi: float = Field(
        default=1.0, gt=0, description="verdict: any one numeric feature with PSI above this"
    )
    bins: int = Field(default=10, ge=2, le=100)


#: Columns the platform adds to every customer table (an attribute may not take the name).
PLATFORM_COLUMNS = frozenset(
    {"customer_id", "signup_date", "churned", "total_sales", "split", "tenure_days", "latest_by"}
)
#: Behaviour features built from transactions (names and prefixes), see ``features.py``.
BEHAVIOUR_COLUMNS = frozenset(
    {
        "frequency",
        "return_count",
        "recency_days",
        "monetary_total",
        "max_order_value",
        "return_amount",
        "active_days",
        "avg_order_value",
        "return_rate",
        "days_between_orders",
        "sales_trend_90d",
        "orders_trend_90d",
        "naive_total_sales",
        "has_purchases",
        "n_categories",
        "main_country",
        "n_countries",
    }
)
BEHAVIOUR_PREFIXES = ("orders_", "sales_", "cat_share_")


def _check_attribute_names(customers: CustomersSpec, *, with_behaviour: bool) -> None:
    """Attribute names must be unique and must not take a column the platform adds."""
    seen: set[str] = set()
    for a in customers.attributes:
        if a.name in seen:
            raise ValueError(f"attribute name {a.name!r} is given twice")
        seen.add(a.name)
        if a.name in PLATFORM_COLUMNS:
            raise ValueError(
                f"attribute name {a.name!r} is a column the platform adds: rename it (its "
                f"source column stays {a.raw!r})"
            )
        if with_behaviour and (
            a.name in BEHAVIOUR_COLUMNS or a.name.startswith(BEHAVIOUR_PREFIXES)
        ):
            raise ValueError(
                f"attribute name {a.name!r} is a feature built from the transactions: rename "
                f"it (its source column stays {a.raw!r})"
            )


def _check_ids(cfg: DatasetConfig) -> None:
    """The customer table names its id column, or numbers its rows when it has none (a
    snapshot alone: nothing else joins on such an id)."""
    c = cfg.customers
    assert c is not None
    if c.row_ids and c.id_column:
        raise ValueError("customers: give 'id_column' or 'row_ids: true', not both")
    if not c.row_ids and not c.id_column:
        raise ValueError(
            "customers: give 'id_column' (the customer id), or 'row_ids: true' for a table "
            "without one (its rows are numbered from 1)"
        )
    if c.row_ids and cfg.transactions is not None:
        raise ValueError(
            "customers.row_ids: the transactions name customers by id, so the customer table "
            "needs its id column"
        )
    if c.row_ids and (c.latest_by is not None or cfg.labels.file is not None):
        raise ValueError(
            "customers.row_ids: latest_by and labels.file match rows by customer id, so the "
            "table needs its id column"
        )


class DatasetConfig(_Strict):
    """A whole data set: customers and/or transactions, and the labels."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Names the data set's storage and landing folders and MLflow names: "
        "letters, digits, '_', '.' and '-', starting with a letter or digit (no '/' or '..').",
    )
    description: str = ""
    customers: CustomersSpec | None = None
    transactions: TransactionsSpec | None = None
    labels: LabelsSpec
    models: ModelsSpec = Field(default_factory=ModelsSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    seed: int = 42

    @model_validator(mode="after")
    def _tables_given(self) -> DatasetConfig:
        if self.customers is None and self.transactions is None:
            raise ValueError("give 'customers', 'transactions' or both")
        if self.labels.source == "transactions" and self.transactions is None:
            raise ValueError("labels.source 'transactions' needs a 'transactions' table")
        if self.labels.source == "columns" and self.customers is None:
            raise ValueError("labels.source 'columns' needs a 'customers' table")
        if self.customers is not None:
            _check_attribute_names(self.customers, with_behaviour=self.transactions is not None)
            _check_ids(self)
        return self

    @property
    def is_snapshot(self) -> bool:
        """True when labels come from columns and there are no transactions."""
        return self.transactions is None

    @property
    def has_value_label(self) -> bool:
        """True when the data set has a customer-value label (``total_sales``): for
        transaction labels unless the lines are ``activity_only``, and for column labels
        when ``total_sales_column`` is given."""
        if self.labels.total_sales_column:
            return True
        return self.labels.source == "transactions" and not (
            self.transactions is not None and self.transactions.activity_only
        )

    @property
    def naive_lookback_days(self) -> int:
        return self.labels.naive_lookback_days or 3 * self.labels.horizon_days


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _expand(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise DatasetConfigError(f"environment variable ${{{name}}} is not set")

    return _VAR.sub(sub, text)


#: What a data set name must look like to prefix Dagster asset keys (Dagster's name rule).
PREFIX_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def prefix_name_problem(name: str) -> str | None:
    """Why ``name`` cannot prefix asset keys (a code location of its own), or None."""
    if PREFIX_NAME.match(name):
        return None
    return (
        f"data set name {name!r} cannot prefix asset keys: use letters, digits and underscores only"
    )


def builtin_names() -> list[str]:
    """Names of the data set configs shipped with the platform."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def known_names(env: dict[str, str] | None = None) -> list[str]:
    """Every config a name finds: the built-in ones and ``<name>.yaml`` in
    ``CHURN_DATASETS_DIR`` (the user's own)."""
    own = (os.environ if env is None else env).get("CHURN_DATASETS_DIR")
    names = set(builtin_names())
    if own and Path(own).is_dir():
        names |= {p.stem for p in Path(own).glob("*.yaml")}
    return sorted(names)


def load_dataset_config(name_or_path: str, env: dict[str, str] | None = None) -> DatasetConfig:
    """Load a config by name (``<name>.yaml`` in ``CHURN_DATASETS_DIR``, else a built-in one)
    or a YAML file by path; ``${VAR}`` is expanded.

    Raises :class:`DatasetConfigError` naming the field that does not match the format.
    """
    env = dict(os.environ if env is None else env)
    real = env.get("CHURN_REAL_DATA_DIR") or "../shared/data"
    env["CHURN_REAL_DATA_DIR"] = real if "://" in real else str(Path(real).resolve())
    path = Path(name_or_path)
    if not path.suffix:
        own = env.get("CHURN_DATASETS_DIR")
        candidates = [Path(own) / f"{name_or_path}.yaml"] if own else []
        candidates.append(BUILTIN_DIR / f"{name_or_path}.yaml")
        found = [p for p in candidates if p.exists()]
        if not found:
            where = f"in {own} (CHURN_DATASETS_DIR) or " if own else ""
            raise DatasetConfigError(
                f"unknown data set {name_or_path!r}: no {name_or_path}.yaml {where}among the "
                f"built-in ones; built-in ones are {builtin_names()}, or give the path of a "
                "YAML config"
            )
        path = found[0]
    if not path.exists():
        raise DatasetConfigError(f"data set config not found: {path}")
    try:
        raw = yaml.safe_load(_expand(path.read_text(), env))
    except yaml.YAMLError as e:
        raise DatasetConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise DatasetConfigError(f"{path}: expected a mapping at the top level")
    try:
        return DatasetConfig.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  field '{loc}': {err['msg']}")
        raise DatasetConfigError(f"{path}: invalid data set config\n" + "\n".join(lines)) from e
