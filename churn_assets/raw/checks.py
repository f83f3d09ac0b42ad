"""Blocking checks of the raw tables, evaluated while the raw asset materializes.

Three checks per table: every landing file was readable, every value parsed into its
column's type, and the table meets its Great Expectations suite. Each failure names the
file or column and the count of bad rows; the bad rows and files are in quarantine.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import dagster as dg

from churn_assets import scope

if TYPE_CHECKING:
    from churn_assets.lib.ingest import IngestResult
    from churn_assets.lib.quality import ValidationReport

FILES = "files_readable"
PARSE = "values_parse"
SUITE = "expectations_met"


def raw_check_specs(
    asset: str, partitions_def: dg.PartitionsDefinition | None = None
) -> list[dg.AssetCheckSpec]:
    """The three blocking checks of a raw table (per partition with ``partitions_def``;
    Dagster marks partitioned checks as preview: its warning is silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _specs(asset, partitions_def)


def _specs(asset: str, partitions_def: dg.PartitionsDefinition | None) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            FILES,
            asset=asset,
            blocking=True,
            partitions_def=partitions_def,
            description="Every landing file is readable: not empty, valid encoding, all "
            "configured columns present. Unreadable files are quarantined whole.",
        ),
        dg.AssetCheckSpec(
            PARSE,
            asset=asset,
            blocking=True,
            partitions_def=partitions_def,
            description="Every value parses into its column's type (numbers, dates, "
            "booleans); rows with unparseable values are quarantined. Warns when a churn "
            "label column has one class only by labels.churned_positive.",
        ),
        dg.AssetCheckSpec(
            SUITE,
            asset=asset,
            blocking=True,
            partitions_def=partitions_def,
            description="The table meets its Great Expectations suite (ids present and "
            "unique, values in range, at least one row). Bad rows are quarantined.",
        ),
    ]


def files_check(asset: str, res: IngestResult, where: str | None) -> dg.AssetCheckResult:
    """Fails when any landing file could not be read, naming file, problem and column."""
    problems = res.file_problems
    return dg.AssetCheckResult(
        check_name=FILES,
        asset_key=scope.key(asset),
        passed=not problems,
        description=(
            "; ".join(p.message() for p in problems)
            if problems
            else f"{len(res.files)} file(s) read"
            + (f"; {res.empty_rows:,} empty row(s) skipped" if res.empty_rows else "")
            + (f"; {res.total_rows:,} totals row(s) skipped" if res.total_rows else "")
            + (
                f"; {res.note_rows:,} note line(s) skipped (text alone in the id column: a "
                "report's header or footer)"
                if res.note_rows
                else ""
            )
            + (f"; {absent_columns_text(res)}" if res.absent_columns else "")
        ),
        metadata={
            "files": len(res.files),
            "bad_files": len(problems),
            "empty_rows_skipped": res.empty_rows,
            "totals_rows_skipped": res.total_rows,
            "note_rows_skipped": res.note_rows,
            "problems": dg.MetadataValue.json(
                [
                    {
                        "file": p.file,
                        "problem": p.problem,
                        "column": p.column,
                        "rows": p.rows,
                        "hint": p.hint,
                    }
                    for p in problems
                ]
            ),
            **({"quarantine": dg.MetadataValue.path(where)} if where else {}),
            **(
                {"columns_absent_from_files": dg.MetadataValue.json(res.absent_columns)}
                if res.absent_columns
                else {}
            ),
        },
    )


def absent_columns_text(res: IngestResult) -> str:
    """Which files lack which attribute columns (read as missing values for their rows)."""
    parts = [
        f"{', '.join(repr(c) for c in cols)} absent from {name}"
        for name, cols in res.absent_columns.items()
    ]
    return "; ".join(parts) + " (an export before the column was added: read as missing)"


def parse_check(asset: str, res: IngestResult, where: str | None) -> dg.AssetCheckResult:
    """Fails when values could not be parsed, naming each column and its bad-row count (and
    the likely fix), or when the churn label has several values besides the churned ones
    without ``churned_negative``; warns when it has one class only, naming its values."""
    errors = res.parse_errors
    hints = res.parse_hints
    problems = [
        f"column '{c}': {n:,} value(s) not parseable" + (f" ({hints[c]})" if c in hints else "")
        for c, n in errors.items()
    ]
    if res.label_problem:
        problems.append(f"churn label unusable: {res.label_problem}")
    text = "; ".join(problems)
    return dg.AssetCheckResult(
        check_name=PARSE,
        asset_key=scope.key(asset),
        passed=not problems,
        # a one-class label alone does not block: a table of current customers may have only
        # "No" and still be scored; training refuses it with this check's text as the reason
        # a third label value ('Unknown') does: it would be trained on as retained
        severity=dg.AssetCheckSeverity.ERROR
        if errors or res.label_blocks
        else dg.AssetCheckSeverity.WARN,
        description=text or "all values parsed",
        metadata={
            "bad_values_by_column": dg.MetadataValue.json(errors),
            "bad_values": sum(errors.values()),
            **({"hints": dg.MetadataValue.json(hints)} if hints else {}),
            **({"quarantine": dg.MetadataValue.path(where)} if where else {}),
        },
    )


def suite_check(asset: str, report: ValidationReport, where: str | None) -> dg.AssetCheckResult:
    """The Great Expectations suite's verdict, with a markdown table of every rule."""
    failures = report.failures()
    blocking_failed = not report.blocking_success
    # rules that pass with a tolerance ("for at least 99.9% of rows") still quarantine
    # their bad rows: said, not "all met"
    tolerated = [
        f"{r.unexpected_count:,} row(s) break {r.rule.kind} on '{r.rule.column}', within its "
        "tolerance: quarantined"
        for r in report.results
        if r.success and r.unexpected_count and r.rule.mostly < 1.0
    ]
    return dg.AssetCheckResult(
        check_name=SUITE,
        asset_key=scope.key(asset),
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR if blocking_failed else dg.AssetCheckSeverity.WARN,
        description="; ".join([*(f.message for f in failures), *tolerated])
        or "all expectations met",
        metadata={
            "expectations": dg.MetadataValue.md(report.to_markdown()),
            "failed_expectations": len(failures),
            "bad_rows_by_rule": dg.MetadataValue.json(
                {f"{f.rule.kind}:{f.rule.column}": f.unexpected_count for f in failures}
            ),
            **({"quarantine": dg.MetadataValue.path(where)} if where else {}),
        },
    )
