"""The data-quality rules of each table, derived from the data set config.

Rules are declared once and used twice (see :mod:`churn_assets.lib.quality`): as a Great
Expectations suite for the verdict, and as polars expressions marking rows for quarantine.
"""

from __future__ import annotations

import datetime as dt

from churn_assets.lib.datasets import DatasetConfig
from churn_assets.lib.quality import Rule

_DTYPE = {
    "numeric": "numeric",
    "integer": "numeric",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
    "string": "string",
    "categorical": "string",
}


def customer_rules(cfg: DatasetConfig) -> list[Rule]:
    """Rules for ``raw_customers``: a non-empty table of unique ids, attributes in range."""
    spec = cfg.customers
    if spec is None:
        return []
    rules = [
        Rule("row_count", None, min_value=1, description="at least one customer"),
        Rule(
            "not_null",
            "customer_id",
            description="every customer has an id",
            hint=f"the file's id column {spec.id_column!r} is blank on these rows: a customer "
            "without an id can be neither trained on nor served; fill or remove those rows "
            "and land the file again",
        ),
        Rule(
            "unique",
            "customer_id",
            description="one row per customer id",
            hint="a table of customer-months or of several snapshots needs the latest row "
            "of each customer only (customers.latest_by); files that hold different "
            "customers under the same ids (a training and a test file) need the ids made "
            "distinct before landing; or the id column is not the customer's",
        ),
    ]
    cols = list(spec.attributes)
    if spec.signup_date is not None:
        cols.append(spec.signup_date)
    for c in cols:
        if not c.nullable:
            rules.append(Rule("not_null", c.name, description=f"{c.name} is required"))
        if c.min is not None or c.max is not None:
            rules.append(
                Rule(
                    "between",
                    c.name,
                    min_value=c.min,
                    max_value=c.max,
                    description=f"{c.name} within [{c.min}, {c.max}]",
                )
            )
    if cfg.labels.source == "columns":
        if not cfg.labels.allow_unlabelled:
            rules.append(
                Rule(
                    "not_null",
                    "churned",
                    description="every customer has a churn label",
                    hint="customers whose outcome is not known yet? labels.allow_unlabelled: "
                    "true scores them without training on them",
                )
            )
        rules.append(Rule("in_set", "churned", value_set=(0, 1), description="churn label 0/1"))
    return rules


#: Transactions dated before this are placeholders (Unix time 0, a spreadsheet's day 0).
EARLIEST_PLAUSIBLE_TIMESTAMP = dt.datetime(1971, 1, 1)
#: Share of lines that must be dated, and dated plausibly: fewer blank or stray dates are
#: quarantined and the run goes on (40 lines of a bad clock in 188,498); more stop it (a
#: file's clock is wrong, or its time column is blank).
STRAY_DATES_ALLOWED = 0.999


def latest_plausible_timestamp(today: dt.date | None = None) -> dt.datetime:
    """The end of tomorrow in UTC: a later transaction cannot have happened yet (a day of
    slack for a local time ahead of UTC)."""
    today = today or dt.datetime.now(dt.UTC).date()
    return dt.datetime.combine(today + dt.timedelta(days=2), dt.time())


def transaction_rules(cfg: DatasetConfig) -> list[Rule]:
    """Rules for ``raw_transactions``: ids, parseable timestamps, amounts in a sane range."""
    t = cfg.transactions
    if t is None:
        return []
    return [
        Rule("row_count", None, min_value=1, description="at least one transaction"),
        Rule(
            "not_null",
            "customer_id",
            mostly=t.customer_id_required_fraction,
            description="transactions name a customer",
            hint="lines without a customer (guest orders, logged-out events) are quarantined "
            "once transactions.customer_id_required_fraction allows them: set it a little "
            "below the share of lines that name one",
        ),
        Rule(
            "not_null",
            "timestamp",
            mostly=STRAY_DATES_ALLOWED,
            description="transactions have a timestamp",
            hint="a line without a time cannot be placed before or after the cut-off; a "
            "few such lines are quarantined, more stop the run: the file's time column is "
            "blank, or timestamp names the wrong column",
        ),
        Rule(
            "between",
            "timestamp",
            min_value=EARLIEST_PLAUSIBLE_TIMESTAMP,
            max_value=latest_plausible_timestamp(),
            mostly=STRAY_DATES_ALLOWED,
            description="transactions dated from 1971 to tomorrow (UTC)",
            hint="a line from the future (a typo in the year, a clock set wrong) would move "
            "the label and scoring cut-offs to its date; a placeholder date (1970-01-01 is "
            "Unix time 0, 1899-12-30 a spreadsheet's day 0) would make its customer decades "
            "old. A few such lines are quarantined, more stop the run: fix or remove them",
        ),
        Rule("not_null", "amount", description="every transaction has an amount"),
        Rule(
            "between",
            "amount",
            min_value=t.min_amount,
            max_value=t.max_amount,
            description=f"amount within [{t.min_amount:g}, {t.max_amount:g}]",
        ),
    ]


FEATURE_RULES_BASE = [
    Rule("row_count", None, min_value=1, description="at least one customer has features"),
    Rule("not_null", "customer_id"),
    Rule("unique", "customer_id", description="one feature row per customer"),
]


def feature_rules(columns: list[str], numeric: list[str], with_labels: bool) -> list[Rule]:
    """Rules for ``customer_features``: unique customers, no missing behaviour, valid labels."""
    rules = list(FEATURE_RULES_BASE)
    for c in ("recency_days", "tenure_days", "frequency", "days_between_orders"):
        if c in columns:
            rules.append(Rule("not_null", c))
            rules.append(Rule("between", c, min_value=0, description=f"{c} ≥ 0"))
    for c in numeric:
        if c.startswith(("orders_", "sales_", "cat_share_")) or c in ("naive_total_sales",):
            rules.append(Rule("not_null", c))
    if with_labels:
        rules.append(Rule("in_set", "churned", value_set=(0, 1), description="churned is 0/1"))
        rules.append(Rule("not_null", "churned"))
        if "total_sales" in columns:
            # not blocking: a negative value label (a credit balance) makes the value model
            # set not applicable; the churn model goes on
            rules.append(
                Rule(
                    "between",
                    "total_sales",
                    min_value=0,
                    blocking=False,
                    description="total_sales ≥ 0 (else the value model set does not apply)",
                )
            )
    return rules
