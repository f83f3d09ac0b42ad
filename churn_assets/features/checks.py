"""Blocking Great Expectations suite on ``customer_features``."""

import dagster as dg

from churn_assets.features.assets import customer_features


@dg.asset_check(asset=customer_features, blocking=True)
def customer_features_valid(customer_features) -> dg.AssetCheckResult:
    """Features are usable for training: one row per customer, no missing behavioural
    values, non-negative recency/tenure/frequency, labels ``churned`` in {0, 1} and
    ``total_sales`` ≥ 0 (Great Expectations suite; a negative value label only warns: the
    value model set is then not applicable)."""
    from churn_assets.lib.quality import validate
    from churn_assets.lib.rules import feature_rules

    df = customer_features
    numeric = [c for c, t in df.schema.items() if t.is_numeric()]
    rules = feature_rules(df.columns, numeric, with_labels="churned" in df.columns)
    report = validate(df, rules, "customer_features")
    # a rule that does not block (a negative value label: the value set does not apply)
    # warns; the churn model goes on
    return dg.AssetCheckResult(
        passed=report.blocking_success,
        severity=dg.AssetCheckSeverity.ERROR
        if not report.blocking_success
        else dg.AssetCheckSeverity.WARN,
        description="; ".join(f.message for f in report.failures()) or "all expectations met",
        metadata={
            "expectations": dg.MetadataValue.md(report.to_markdown()),
            "failed_expectations": len(report.failures()),
        },
    )
