"""A pandas reference for ``build_customer_features(None, transactions, params)``.

This is the benchmark baseline: the same point-in-time transaction features and labels as
:mod:`churn_assets.lib.features`, written the way a typical hand-rolled pandas churn project
would write them (boolean masks, helper columns and ``groupby(...).agg(...)``). It is not
deliberately slow and uses no polars for the computation (only the ``FeatureParams`` and
``slug`` helpers are shared, so the parameters and column names are identical).

The customer universe is the set of customers with at least one transaction strictly before
the cut-off, as in the polars no-customer-table path. ``tests/code/test_pandas_reference.py``
checks both implementations agree column by column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn_assets.lib.features import MAX_CATEGORY_SHARES, FeatureParams, slug

ID = "customer_id"


def _days(delta: pd.Series) -> pd.Series:
    """A timedelta column in (fractional) days."""
    return delta.dt.total_seconds() / 86_400.0


def top_categories(pre: pd.DataFrame, limit: int = MAX_CATEGORY_SHARES) -> tuple[str, ...]:
    """The categories with the most gross sales before the cut-off, sorted by name."""
    sales = (
        pre.loc[~pre["is_return"] & pre["category"].notna()]
        .groupby("category", observed=True)["amount"]
        .sum()
        .reset_index()
        .sort_values(["amount", "category"], ascending=[False, True])
        .head(limit)
    )
    return tuple(sorted(str(c) for c in sales["category"]))


def _orders(pre: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """One row per customer and order (invoice, or timestamp for lines without an invoice)."""
    order_key = pre["invoice_id"]
    no_invoice = order_key.isna()
    if no_invoice.any():
        order_key = order_key.astype(object)  # a copy
        order_key[no_invoice] = pre.loc[no_invoice, "timestamp"].astype(str)
    lines = pd.DataFrame(
        {
            ID: pre[ID],
            "order_key": order_key,
            "timestamp": pre["timestamp"],
            "amount": pre["amount"],
            "gross": pre["amount"].where(~pre["is_return"], 0.0),
            "returned": pre["amount"].where(pre["is_return"], 0.0),
            "is_return": pre["is_return"],
            "is_purchase": ~pre["is_return"],
        }
    )
    orders = (
        lines.groupby([ID, "order_key"], sort=False, observed=True)
        .agg(
            ts=("timestamp", "min"),
            net=("amount", "sum"),
            gross=("gross", "sum"),
            returned=("returned", "sum"),
            buy=("is_purchase", "any"),
            ret=("is_return", "any"),
        )
        .reset_index()
    )
    orders["age"] = _days(cutoff - orders["ts"])
    return orders


def _trend(recent: pd.Series, prior: pd.Series) -> pd.Series:
    return (recent - prior) / (recent.abs() + prior.abs() + 1.0)


def _behaviour(orders: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Per-customer order statistics (RFM, windows, returns, trends, naive forecast)."""
    o = orders
    purchase = o["buy"]
    age = o["age"]
    o["purchase"] = purchase
    o["purchase_ts"] = o["ts"].where(purchase)
    o["purchase_age"] = age.where(purchase)
    o["purchase_gross"] = o["gross"].where(purchase)
    o["return_net"] = o["returned"]
    o["day"] = o["ts"].dt.normalize()
    o["naive_net"] = o["net"].where(age <= params.naive_lookback_days, 0.0)
    window_aggs = {}
    for w in params.windows:
        o[f"orders_{w}d"] = purchase & (age <= w)
        o[f"sales_{w}d"] = o["net"].where(age <= w, 0.0)
        window_aggs[f"orders_{w}d"] = (f"orders_{w}d", "sum")
        window_aggs[f"sales_{w}d"] = (f"sales_{w}d", "sum")
    prior = (age > 90) & (age <= 180)
    o["orders_p90"] = purchase & prior
    o["sales_p90"] = o["net"].where(prior, 0.0)

    c = o.groupby(ID).agg(
        frequency=("purchase", "sum"),
        return_count=("ret", "sum"),
        last_purchase=("purchase_ts", "max"),
        first_order=("ts", "min"),
        first_purchase=("purchase_ts", "min"),
        recency_days=("purchase_age", "min"),
        first_age=("age", "max"),
        monetary_total=("net", "sum"),
        gross_total=("gross", "sum"),
        max_order_value=("purchase_gross", "max"),
        return_amount=("return_net", "sum"),
        active_days=("day", "nunique"),
        naive_window_sales=("naive_net", "sum"),
        **window_aggs,
        orders_p90=("orders_p90", "sum"),
        sales_p90=("sales_p90", "sum"),
    )
    counts = ["frequency", "return_count", "active_days", "orders_p90"]
    counts += [f"orders_{w}d" for w in params.windows]
    c[counts] = c[counts].astype("float64")
    c["return_amount"] = c["return_amount"].abs()

    c["avg_order_value"] = np.where(
        c["frequency"] > 0, c["gross_total"] / c["frequency"].where(c["frequency"] > 0, 1.0), 0.0
    )
    c["return_rate"] = (c["return_count"] / (c["frequency"] + c["return_count"])).fillna(0.0)
    span_days = _days(c["last_purchase"] - c["first_purchase"])
    c["days_between_orders"] = np.where(
        c["frequency"] > 1, span_days / (c["frequency"] - 1), c["first_age"]
    )
    c["sales_trend_90d"] = _trend(c["sales_90d"], c["sales_p90"])
    c["orders_trend_90d"] = _trend(c["orders_90d"], c["orders_p90"])
    naive = c["naive_window_sales"] * params.horizon_days / params.naive_lookback_days
    c["naive_total_sales"] = naive.clip(lower=0.0)
    c["recency_days"] = c["recency_days"].fillna(c["first_age"])
    c["max_order_value"] = c["max_order_value"].fillna(0.0)
    c["tenure_days"] = _days(pd.Timestamp(params.cutoff_ts) - c["first_order"])
    c["has_purchases"] = c["first_purchase"].notna().astype("float64")
    return c.drop(
        columns=[
            "last_purchase",
            "first_order",
            "first_purchase",
            "first_age",
            "gross_total",
            "naive_window_sales",
            "orders_p90",
            "sales_p90",
        ]
    )


def _category_shares(pre: pd.DataFrame, categories: tuple[str, ...]) -> pd.DataFrame:
    """Number of categories bought and each top category's share of gross spend."""
    bought = pre.loc[~pre["is_return"] & pre["category"].notna(), [ID, "category", "amount"]]
    bought = bought.assign(category=bought["category"].astype(str))
    n_categories = bought.groupby(ID)["category"].nunique().astype("float64")
    spend = bought.groupby([ID, "category"])["amount"].sum().unstack(fill_value=0.0)
    shares = pd.DataFrame(index=spend.index)
    total = spend.sum(axis=1)
    for cat in categories:
        col = spend[cat] if cat in spend.columns else 0.0
        shares[f"cat_share_{slug(cat)}"] = (col / total).fillna(0.0)
    shares.insert(0, "n_categories", n_categories)
    return shares


def _countries(pre: pd.DataFrame) -> pd.DataFrame:
    """Main country (largest absolute spend, ties by name) and number of countries."""
    lines = pre.loc[pre["country"].notna(), [ID, "country", "amount"]]
    lines = lines.assign(country=lines["country"].astype(str), value=lines["amount"].abs())
    per_country = lines.groupby([ID, "country"])["value"].sum().reset_index()
    ranked = per_country.sort_values([ID, "value", "country"], ascending=[True, False, True])
    main = ranked.drop_duplicates(ID).set_index(ID)["country"].rename("main_country")
    n_countries = per_country.groupby(ID).size().astype("float64").rename("n_countries")
    return pd.concat([main, n_countries], axis=1)


def _labels(transactions: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """``churned``: no purchase in the horizon; ``total_sales``: net spend, floored at 0."""
    ts = transactions["timestamp"]
    window = transactions.loc[
        (ts >= params.cutoff_ts) & (ts < params.horizon_end_ts), [ID, "amount", "is_return"]
    ]
    window = window.assign(purchase=~window["is_return"])
    labels = window.groupby(ID).agg(bought=("purchase", "any"), total_sales=("amount", "sum"))
    labels["total_sales"] = labels["total_sales"].clip(lower=0.0)
    return labels


def pandas_customer_features(transactions: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Point-in-time transaction features (and labels) per customer, in pandas.

    ``transactions`` has the standard columns ``customer_id``, ``timestamp``, ``amount``,
    ``invoice_id``, ``category``, ``country`` and ``is_return``. Returns one row per customer
    with a transaction strictly before the cut-off, sorted by ``customer_id``, with the same
    columns (and order) as ``build_customer_features(None, transactions, params)``.
    """
    cutoff = pd.Timestamp(params.cutoff_ts)
    pre = transactions.loc[transactions["timestamp"] < cutoff]
    categories = params.categories
    if categories is None:
        categories = top_categories(pre)

    features = _behaviour(_orders(pre, cutoff), params)
    if categories:
        shares = _category_shares(pre, categories)
        features = features.join(shares, how="left")
        features[shares.columns] = features[shares.columns].fillna(0.0)
    features = features.join(_countries(pre), how="left")
    features["n_countries"] = features["n_countries"].fillna(0.0)

    columns = [
        "frequency", "return_count", "recency_days", "monetary_total", "max_order_value",
        "return_amount", "active_days",
    ]  # fmt: skip
    for w in params.windows:
        columns += [f"orders_{w}d", f"sales_{w}d"]
    columns += [
        "avg_order_value", "return_rate", "days_between_orders", "sales_trend_90d",
        "orders_trend_90d", "naive_total_sales",
    ]  # fmt: skip
    if categories:
        columns += ["n_categories", *[f"cat_share_{slug(c)}" for c in categories]]
    columns += ["main_country", "n_countries", "tenure_days", "has_purchases"]
    features = features[columns]

    if params.with_labels:
        labels = _labels(transactions, params)
        buyers = labels.index[labels["bought"]]
        features["churned"] = (~features.index.isin(buyers)).astype("int8")
        features = features.join(labels["total_sales"], how="left")
        features["total_sales"] = features["total_sales"].fillna(0.0)
    return features.sort_index().reset_index()
