"""Tests for churn_assets.lib.quality: GX 1.x verdicts and polars bad-row expressions agree."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import subprocess
import sys
import zoneinfo

import polars as pl
import pytest

from churn_assets.lib.quality import (
    Rule,
    RuleResult,
    ValidationReport,
    bad_row_reasons,
    validate,
)

NAN = math.nan
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def _only(df: pl.DataFrame, rule: Rule) -> RuleResult:
    report = validate(df, [rule], "t")
    assert len(report.results) == 1
    return report.results[0]


def _polars_count(df: pl.DataFrame, rule: Rule) -> int:
    expr = rule.bad_rows(df.schema)
    assert expr is not None
    return int(df.select(expr.sum()).item())


# --------------------------------------------------------------------------------------------
# Import cost and rule declaration
# --------------------------------------------------------------------------------------------


def test_import_is_light_and_framework_free() -> None:
    code = (
        "import sys; import churn_assets.lib.quality; print(0); "
        "print(sorted(m for m in ('great_expectations', 'dagster', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[1] == "[]", "quality.py must import neither GX, dagster nor pandas eagerly"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "nope", "column": "a"},
        {"kind": "not_null", "column": None},
        {"kind": "between", "column": "a"},
        {"kind": "in_set", "column": "a"},
        {"kind": "type", "column": "a", "dtype": "complex"},
        {"kind": "row_count", "column": None},
        {"kind": "not_null", "column": "a", "mostly": 1.5},
    ],
)
def test_invalid_rules_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Rule(**kwargs)


def test_rule_normalises_value_set_and_describes_itself() -> None:
    rule = Rule("in_set", "s", value_set=["a", "b"])
    assert rule.value_set == ("a", "b")
    hash(rule)  # frozen and hashable
    assert Rule("between", "amount", min_value=-10000, max_value=1e6).describe() == (
        "amount must be ≥ -10000 and ≤ 1000000"
    )
    assert Rule("not_null", "a", description="custom").describe() == "custom"
    for kind in ("type", "row_count", "column_exists"):
        rule = Rule(kind, None if kind == "row_count" else "a", min_value=1, dtype="numeric")
        assert rule.bad_rows() is None


# --------------------------------------------------------------------------------------------
# GX counts == polars counts, per kind, with nulls
# --------------------------------------------------------------------------------------------

AGREEMENT_CASES = [
    # (id, column values, polars dtype or None, rule, expected bad rows)
    ("not_null-int", [1, None, 3, None], None, Rule("not_null", "x"), 2),
    ("not_null-float-nan", [1.0, NAN, None, 2.0], None, Rule("not_null", "x"), 2),
    ("not_null-str", ["a", None, "b"], None, Rule("not_null", "x"), 1),
    ("not_null-bool", [True, None, False], None, Rule("not_null", "x"), 1),
    ("not_null-cat", ["a", None, "b"], pl.Categorical, Rule("not_null", "x"), 1),
    (
        "not_null-datetime",
        [dt.datetime(2024, 1, 1), None, dt.datetime(2024, 1, 2)],
        None,
        Rule("not_null", "x"),
        1,
    ),
    ("not_null-date", [dt.date(2024, 1, 1), None, None], None, Rule("not_null", "x"), 2),
    ("unique-int-nulls", [1, 1, 2, None, None, 3], None, Rule("unique", "x"), 2),
    ("unique-str", ["a", "b", "a", "a", None], None, Rule("unique", "x"), 3),
    ("unique-float-nan", [1.0, 1.0, NAN, NAN, 2.0], None, Rule("unique", "x"), 2),
    ("unique-cat", ["a", "b", "b", None], pl.Categorical, Rule("unique", "x"), 2),
    (
        "between-int-nulls",
        [-5, 0, 5, 10, 11, None],
        None,
        Rule("between", "x", min_value=0, max_value=10),
        2,
    ),
    (
        "between-float-nan",
        [NAN, -1.0, 0.5, None, 2.0, 1.0],
        None,
        Rule("between", "x", min_value=0, max_value=1),
        2,
    ),
    ("between-min-only", [-1, 0, 1, None], None, Rule("between", "x", min_value=0), 1),
    ("between-max-only", [-1.5, 0.0, 7.5, None], None, Rule("between", "x", max_value=5), 1),
    (
        "in_set-str-nulls",
        ["a", "b", "c", None, "d"],
        None,
        Rule("in_set", "x", value_set=("a", "b")),
        2,
    ),
    ("in_set-int-nulls", [0, 1, 2, None, 1], None, Rule("in_set", "x", value_set=(0, 1)), 1),
    ("in_set-float-intset", [0.0, 1.0, 0.5, None], None, Rule("in_set", "x", value_set=(0, 1)), 1),
    (
        "in_set-cat",
        ["a", "zz", None, "b"],
        pl.Categorical,
        Rule("in_set", "x", value_set=("a", "b")),
        1,
    ),
    (
        "in_set-enum",
        ["a", "c", None],
        pl.Enum(["a", "b", "c"]),
        Rule("in_set", "x", value_set=("a", "b")),
        1,
    ),
    ("in_set-bool-01", [True, False, None], None, Rule("in_set", "x", value_set=(0, 1)), 0),
    (
        "in_set-datetime",
        [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2), None],
        None,
        Rule("in_set", "x", value_set=(dt.datetime(2024, 1, 1),)),
        1,
    ),
    (
        "in_set-datetime-tz",
        [dt.datetime(2024, 1, 1, 12, tzinfo=PARIS), dt.datetime(2024, 1, 2, tzinfo=PARIS), None],
        pl.Datetime("us", "Europe/Paris"),
        Rule("in_set", "x", value_set=(dt.datetime(2024, 1, 1, 12, tzinfo=PARIS),)),
        1,
    ),
    (
        "in_set-date",
        [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3), None],
        None,
        Rule("in_set", "x", value_set=(dt.date(2024, 1, 1),)),
        2,
    ),
]


@pytest.mark.parametrize(
    ("values", "dtype", "rule", "expected"),
    [case[1:] for case in AGREEMENT_CASES],
    ids=[case[0] for case in AGREEMENT_CASES],
)
def test_gx_and_polars_counts_agree(
    values: list, dtype: pl.DataType | None, rule: Rule, expected: int
) -> None:
    df = pl.DataFrame(
        {"x": pl.Series(values, dtype=dtype, strict=False), "other": range(len(values))}
    )
    result = _only(df, rule)
    assert result.unexpected_count == expected
    assert _polars_count(df, rule) == expected
    assert result.success is (expected == 0)
    assert result.element_count == len(values)
    assert "column 'x'" in result.message
    assert f"{expected:,} of" in result.message
    assert bad_row_reasons(df, [rule]).height == expected


def test_bad_rows_without_schema_for_simple_dtypes() -> None:
    df = pl.DataFrame({"s": ["a", "b", None], "n": [1, 20, None]})
    assert df.select(Rule("in_set", "s", value_set=("a",)).bad_rows()).to_series().to_list() == [
        False,
        True,
        False,
    ]
    between = Rule("between", "n", min_value=0, max_value=10).bad_rows()
    assert df.select(between).to_series().to_list() == [False, True, False]
    assert df.select(Rule("not_null", "n").bad_rows()).to_series().to_list() == [
        False,
        False,
        True,
    ]


def test_between_message_and_samples() -> None:
    amounts = [float(i) for i in range(9_983)] + [-20_000.0] * 7 + [2e6] * 10
    df = pl.DataFrame({"amount": amounts})
    rule = Rule("between", "amount", min_value=-10000, max_value=1e6)
    result = _only(df, rule)
    assert result.unexpected_count == 17
    assert result.element_count == 10_000
    assert result.unexpected_percent == pytest.approx(0.17)
    assert result.message == (
        "column 'amount': 17 of 10,000 rows (0.17%) outside [-10000, 1000000]"
    )
    assert len(result.sample_values) == 10
    assert set(result.sample_values) == {-20000.0, 2e6}


def test_percent_is_over_non_null_rows_and_integer_samples_stay_integers() -> None:
    df = pl.DataFrame({"n": [1, 50, None, None, 3]})
    result = _only(df, Rule("between", "n", min_value=0, max_value=10))
    assert result.unexpected_count == 1
    assert result.unexpected_percent == pytest.approx(100 / 3)
    assert "1 of 3 non-null rows (33.33%)" in result.message
    assert result.sample_values == [50]  # int column, although pandas made it float64
    assert isinstance(result.sample_values[0], int)


@pytest.mark.parametrize(("n_null", "success"), [(1, True), (3, False)])
def test_mostly_tolerates_a_fraction(n_null: int, success: bool) -> None:
    df = pl.DataFrame({"c": [None] * n_null + [1] * (4 - n_null)}, schema={"c": pl.Int64})
    result = _only(df, Rule("not_null", "c", mostly=0.5))
    assert result.success is success
    assert result.unexpected_count == n_null
    assert ("tolerated" in result.message) is success


# --------------------------------------------------------------------------------------------
# Type rules on what polars -> pandas gives
# --------------------------------------------------------------------------------------------

TYPE_COLUMNS = {
    "i64": pl.Series([1, 2, 3]),
    "i64_nulls": pl.Series([1, None, 3]),
    "u8": pl.Series([1, 2, 3], dtype=pl.UInt8),
    "f32": pl.Series([1.5, None, NAN], dtype=pl.Float32),
    "dec": pl.Series(["1.50", "2.25", None], dtype=pl.Decimal(10, 2), strict=False),
    "str": pl.Series(["a", None, "c"]),
    "cat": pl.Series(["a", "b", None], dtype=pl.Categorical),
    "enum": pl.Series(["a", "b", None], dtype=pl.Enum(["a", "b"])),
    "bool": pl.Series([True, False, True]),
    "bool_nulls": pl.Series([True, None, False]),
    "dt_us": pl.Series([dt.datetime(2024, 1, 1), None, dt.datetime(2024, 1, 3)]),
    "dt_ms": pl.Series([dt.datetime(2024, 1, 1)] * 3, dtype=pl.Datetime("ms")),
    "dt_ns": pl.Series([dt.datetime(2024, 1, 1)] * 3, dtype=pl.Datetime("ns")),
    "dt_tz": pl.Series([dt.datetime(2024, 1, 1)] * 3).dt.replace_time_zone("Europe/Paris"),
    "date": pl.Series([dt.date(2024, 1, 1), None, dt.date(2024, 1, 3)]),
}
TYPE_OF = {
    "i64": "numeric",
    "i64_nulls": "numeric",
    "u8": "numeric",
    "f32": "numeric",
    "dec": "numeric",
    "str": "string",
    "cat": "string",
    "enum": "string",
    "bool": "boolean",
    "bool_nulls": "boolean",
    "dt_us": "datetime",
    "dt_ms": "datetime",
    "dt_ns": "datetime",
    "dt_tz": "datetime",
    "date": "date",
}
TYPE_NAMES = ("numeric", "string", "datetime", "date", "boolean")


def test_type_rules_match_polars_dtypes() -> None:
    df = pl.DataFrame(TYPE_COLUMNS)
    rules = [Rule("type", col, dtype=t) for col in TYPE_COLUMNS for t in TYPE_NAMES]
    report = validate(df, rules, "types")
    wrong = []
    for result in report.results:
        column, dtype = result.rule.column, result.rule.dtype
        expected_ok = TYPE_OF[column] == dtype
        if result.success is not expected_ok:
            wrong.append((column, dtype, result.message))
        if not expected_ok:
            non_null = df.get_column(column).null_count()
            assert result.unexpected_count == df.height - non_null, result.message
            assert f"'{column}'" in result.message
        else:
            assert result.unexpected_count == 0
    assert wrong == []


def test_type_rule_on_all_null_typed_column_passes_vacuously() -> None:
    df = pl.DataFrame({"s": [None, None]}, schema={"s": pl.String})
    assert _only(df, Rule("type", "s", dtype="string")).success


# --------------------------------------------------------------------------------------------
# Table-level rules, missing columns, errors, edge cases
# --------------------------------------------------------------------------------------------


def test_row_count_and_column_exists() -> None:
    df = pl.DataFrame({"a": [1, 2, 3]})
    report = validate(
        df,
        [
            Rule("row_count", None, min_value=10),
            Rule("row_count", None, min_value=1, max_value=3),
            Rule("column_exists", "a"),
            Rule("column_exists", "b"),
        ],
        "t",
    )
    too_few, ok_count, exists, missing = report.results
    assert not too_few.success and too_few.unexpected_count == 1
    assert too_few.message == "table has 3 rows, expected ≥ 10"
    assert ok_count.success and ok_count.unexpected_count == 0
    assert exists.success and exists.unexpected_count == 0
    assert not missing.success and missing.unexpected_count == 1
    assert missing.message == "column 'b' is missing"


def test_row_count_alone_uses_no_columns() -> None:
    df = pl.DataFrame({"a": range(5)})
    result = _only(df, Rule("row_count", None, min_value=5, max_value=5))
    assert result.success
    assert result.element_count == 5


def test_rules_on_missing_column_fail_without_crashing() -> None:
    df = pl.DataFrame({"a": [1, 2]})
    report = validate(
        df,
        [Rule("not_null", "a"), Rule("between", "ghost", min_value=0, max_value=1)],
        "t",
    )
    assert report.results[0].success
    ghost = report.results[1]
    assert not ghost.success
    assert "'ghost'" in ghost.message and "missing" in ghost.message
    assert ghost.unexpected_count == 2


def test_rule_gx_cannot_evaluate_is_a_failure_with_gx_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    df = pl.DataFrame({"s": ["x", "y"], "a": [1, 5]})
    rules = [
        Rule("between", "s", min_value=0, max_value=1, blocking=False),
        Rule("between", "a", min_value=0, max_value=2),
    ]
    report = validate(df, rules, "t")
    bad_type = report.results[0]
    assert not bad_type.success
    assert "column 's'" in bad_type.message and "could not be evaluated" in bad_type.message
    assert report.results[1].unexpected_count == 1
    with caplog.at_level(logging.WARNING, logger="churn_assets.lib.quality"):
        bad = bad_row_reasons(df, rules)
    assert bad["a"].to_list() == [5]
    assert "skipped" in caplog.text


def test_empty_dataframe() -> None:
    df = pl.DataFrame(
        schema={"id": pl.Int64, "s": pl.String, "ts": pl.Datetime("us"), "c": pl.Categorical}
    )
    rules = [
        Rule("not_null", "id"),
        Rule("unique", "id"),
        Rule("between", "id", min_value=0, max_value=1),
        Rule("in_set", "s", value_set=("a",)),
        Rule("type", "ts", dtype="datetime"),
        Rule("type", "c", dtype="string"),
        Rule("row_count", None, min_value=1),
    ]
    report = validate(df, rules, "empty")
    assert [r.success for r in report.results] == [True] * 6 + [False]
    assert all(r.unexpected_count == 0 for r in report.results[:6])
    assert all(r.unexpected_percent == 0.0 for r in report.results[:6])
    json.dumps(report.to_dict())
    bad = bad_row_reasons(df, rules)
    assert bad.height == 0
    assert bad.columns == ["id", "s", "ts", "c", "_rule", "_column", "_reason"]


def test_all_null_columns() -> None:
    df = pl.DataFrame(
        {
            "untyped": [None, None, None],
            "f": pl.Series([None, None, None], dtype=pl.Float64),
            "s": pl.Series([None, None, None], dtype=pl.String),
        }
    )
    rules = [
        Rule("not_null", "untyped"),
        Rule("not_null", "f"),
        Rule("between", "f", min_value=0, max_value=1),
        Rule("in_set", "s", value_set=("a",)),
        Rule("unique", "s"),
    ]
    report = validate(df, rules, "nulls")
    assert [r.unexpected_count for r in report.results] == [3, 3, 0, 0, 0]
    assert [r.success for r in report.results] == [False, False, True, True, True]
    assert report.results[0].sample_values == [None, None, None]
    assert [_polars_count(df, r) for r in rules] == [3, 3, 0, 0, 0]


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed() -> tuple[pl.DataFrame, list[Rule], ValidationReport]:
    df = pl.DataFrame(
        {
            "id": [1, 2, 2, 4, None],
            "amount": [5.0, -2e4, 3.0, 2e6, None],
            "ts": [dt.datetime(2024, 1, i) for i in range(1, 6)],
            "seg": pl.Series(["a", "b", "zz", "a", None], dtype=pl.Categorical),
        }
    )
    rules = [
        Rule("row_count", None, min_value=1),
        Rule("not_null", "id"),
        Rule("unique", "id", blocking=False),
        Rule("between", "amount", min_value=-10000, max_value=1e6, blocking=False),
        Rule("in_set", "seg", value_set=("a", "b"), blocking=False),
        Rule("type", "ts", dtype="datetime"),
    ]
    return df, rules, validate(df, rules, "raw_transactions")


def test_report_verdicts(mixed: tuple[pl.DataFrame, list[Rule], ValidationReport]) -> None:
    _, rules, report = mixed
    assert [r.rule for r in report.results] == rules  # rule order kept
    assert [r.unexpected_count for r in report.results] == [0, 1, 2, 2, 1, 0]
    assert not report.success
    assert not report.blocking_success  # not_null id is blocking
    assert [f.rule.column for f in report.failures()] == ["id", "id", "amount", "seg"]
    tolerant = validate(mixed[0], [r for r in rules if r.kind != "not_null"], "t")
    assert not tolerant.success and tolerant.blocking_success


def test_report_markdown_and_dict(mixed: tuple[pl.DataFrame, list[Rule], ValidationReport]) -> None:
    _, _, report = mixed
    md = report.to_markdown()
    assert "| rule | column | bad rows | % | ok |" in md
    assert "| between | amount | 2 | 50.00% |" in md
    assert "raw_transactions" in md
    data = json.loads(json.dumps(report.to_dict()))
    assert data["table"] == "raw_transactions"
    assert data["success"] is False and data["blocking_success"] is False
    assert len(data["results"]) == 6
    between = data["results"][3]
    assert between["rule"]["kind"] == "between"
    assert between["unexpected_count"] == 2
    assert sorted(between["sample_values"]) == [-20000.0, 2000000.0]
    assert "column 'amount'" in between["message"]


def test_datetime_samples_are_json_strings() -> None:
    df = pl.DataFrame({"ts": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1), None]})
    result = _only(df, Rule("unique", "ts"))
    assert result.unexpected_count == 2
    assert result.sample_values == ["2024-01-01T00:00:00", "2024-01-01T00:00:00"]


# --------------------------------------------------------------------------------------------
# bad_row_reasons
# --------------------------------------------------------------------------------------------


def test_bad_row_reasons_one_row_per_bad_row(
    mixed: tuple[pl.DataFrame, list[Rule], ValidationReport],
) -> None:
    df, rules, _ = mixed
    bad = bad_row_reasons(df, rules + [Rule("not_null", "id", blocking=False)])
    assert bad.columns == df.columns + ["_rule", "_column", "_reason"]
    assert bad["amount"].to_list() == [-2e4, 3.0, 2e6, None]  # input order kept
    assert bad["_rule"].to_list() == ["unique; between", "unique; in_set", "between", "not_null"]
    assert bad["_column"].to_list() == ["id; amount", "id; seg", "amount", "id"]
    assert (
        bad["_reason"][0] == "column 'id' is duplicated; column 'amount' outside [-10000, 1000000]"
    )
    assert bad["_reason"][3] == "column 'id' is null"
    assert bad.schema["seg"] == pl.Categorical


def test_bad_row_reasons_without_row_rules() -> None:
    df = pl.DataFrame({"a": [1, 2]})
    bad = bad_row_reasons(df, [Rule("row_count", None, min_value=5), Rule("not_null", "zz")])
    assert bad.height == 0
    assert bad.columns == ["a", "_rule", "_column", "_reason"]


# --------------------------------------------------------------------------------------------
# Side effects and speed
# --------------------------------------------------------------------------------------------


def test_no_files_no_progress_bars(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    df = pl.DataFrame({"a": list(range(500)), "b": ["x"] * 500})
    rules = [
        Rule("not_null", "a"),
        Rule("unique", "a"),
        Rule("between", "a", min_value=0, max_value=10),
        Rule("in_set", "b", value_set=("x",)),
        Rule("type", "b", dtype="string"),
        Rule("row_count", None, min_value=1),
    ]
    report = validate(df, rules, "t")
    assert report.results[2].unexpected_count == 489
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err
    assert captured.err == ""
    assert list(tmp_path.iterdir()) == []


def test_analytics_are_off() -> None:
    from churn_assets.lib.quality import _new_context

    context = _new_context()
    assert context.variables.analytics_enabled is False
    assert type(context).__name__ == "EphemeralDataContext"


def test_validate_200k_rows_counts_exactly_with_bounded_samples() -> None:
    """The whole frame is validated (no sampling): exact counts and percentages at 200k rows,
    while the bad values kept as samples stay a handful. Its speed is measured by
    ``benchmarks/validation.py``, not here."""
    n = 200_000
    df = pl.DataFrame(
        {
            "id": pl.int_range(n, eager=True),
            "amount": (pl.int_range(n, eager=True) % 1000).cast(pl.Float64),
            "seg": pl.Series(["a", "b"] * (n // 2)),
        }
    )
    rules = [
        Rule("not_null", "id"),
        Rule("unique", "id"),
        Rule("between", "amount", min_value=0, max_value=998),
        Rule("in_set", "seg", value_set=("a",)),
    ]
    report = validate(df, rules, "big")
    assert [r.unexpected_count for r in report.results] == [0, 0, 200, n // 2]
    assert [r.element_count for r in report.results] == [n] * 4
    assert report.results[2].unexpected_percent == pytest.approx(0.1)
    assert report.results[3].unexpected_percent == pytest.approx(50.0)
    assert set(report.results[2].sample_values) == {999.0}
    assert report.results[3].sample_values and set(report.results[3].sample_values) == {"b"}
    assert all(len(r.sample_values) <= 20 for r in report.results)
    assert not report.success


def test_lines_without_a_customer_name_the_setting_that_admits_them() -> None:
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.rules import transaction_rules

    rule = next(
        r
        for r in transaction_rules(load_dataset_config("synthetic"))
        if (r.kind, r.column) == ("not_null", "customer_id")
    )
    df = pl.DataFrame({"customer_id": ["a"] * 997 + [None] * 3})
    result = _only(df, rule)
    assert not result.success
    assert result.message.startswith("column 'customer_id': 3 of 1,000 rows (0.30%) are null")
    assert "set it a little below the share" in result.message
    assert "transactions.customer_id_required_fraction" in result.message


def test_customers_without_an_id_name_the_files_id_column() -> None:
    """Blank ids in the customer table: the message names the file's id column (not only
    the platform's 'customer_id') and what to do."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.rules import customer_rules

    cfg = load_dataset_config("telco")
    rule = next(r for r in customer_rules(cfg) if (r.kind, r.column) == ("not_null", "customer_id"))
    result = _only(pl.DataFrame({"customer_id": ["a"] * 98 + [None] * 2}), rule)
    assert not result.success
    assert f"the file's id column {cfg.customers.id_column!r} is blank on these rows" in (
        result.message
    )


def test_a_text_column_checked_for_nulls_only_reaches_gx_as_floats() -> None:
    """GX sees a text column that only ``not_null`` rules check as float32 NaN/0 (no Python
    string a row): the same counts, percentages and verdicts as the text itself."""
    from churn_assets.lib.quality import _to_pandas

    ids = pl.Series("customer_id", [None if i % 7 == 0 else f"c{i}" for i in range(700)])
    df = pl.DataFrame({"customer_id": ids, "plan": ids.str.slice(0, 2)})
    pdf = _to_pandas(df, ["customer_id", "plan"], nullness_only={"customer_id"})
    assert str(pdf["customer_id"].dtype) == "float32" and pdf["plan"].dtype == object
    rules = [
        Rule("not_null", "customer_id", mostly=0.85),
        Rule("not_null", "plan"),
        Rule("unique", "plan"),
    ]
    report = validate(df, rules, "t")
    ids_result, plan_result, unique_result = report.results
    assert (ids_result.unexpected_count, ids_result.success) == (100, True)
    assert ids_result.unexpected_percent == pytest.approx(100 / 7)
    assert (plan_result.unexpected_count, plan_result.success) == (100, False)
    assert not unique_result.success  # "c1" and "c1…" share a prefix: the text itself is used


def test_a_transaction_from_the_future_fails_naming_its_date_and_why() -> None:
    """A line dated after tomorrow (a typo in the year) would move the label cut-off: the
    blocking rule flags it, with the bound in ISO 8601 and the likely cause."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.rules import latest_plausible_timestamp, transaction_rules

    assert latest_plausible_timestamp(dt.date(2026, 12, 1)) == dt.datetime(2026, 12, 3)
    rules = transaction_rules(load_dataset_config("synthetic"))
    rule = next(r for r in rules if (r.kind, r.column) == ("between", "timestamp"))
    assert rule.blocking and rule.max_value >= latest_plausible_timestamp()
    stamps = [dt.datetime(2024, 5, 1) + dt.timedelta(hours=h) for h in range(998)]
    df = pl.DataFrame({"timestamp": [*stamps, *[dt.datetime(2201, 3, 5, 10)] * 2]})
    result = _only(df, rule)
    assert not result.success and result.unexpected_count == 2
    assert result.message.startswith("column 'timestamp': 2 of 1,000 rows (0.20%) outside [1971")
    assert "a typo in the year" in result.message
    assert result.sample_values[0] == "2201-03-05T10:00:00"
    assert _polars_count(df, rule) == 2  # and the rows are quarantined
    # a stray line or two in a large file is quarantined and the run goes on
    many = pl.DataFrame({"timestamp": [*stamps, *stamps, dt.datetime(2201, 3, 5, 10)]})
    assert _only(many, rule).success and _polars_count(many, rule) == 1
    # and the check says how many, not "all expectations met"
    from churn_assets.raw.checks import suite_check

    check = suite_check("raw_transactions", validate(many, [rule], "t"), None)
    assert check.passed
    assert check.description == (
        "1 row(s) break between on 'timestamp', within its tolerance: quarantined"
    )


def test_a_placeholder_date_is_quarantined() -> None:
    """1970-01-01 (Unix time 0) or a spreadsheet's day 0 in a transaction file: the line is
    quarantined, with what it likely is; a file full of them stops the run."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.rules import transaction_rules

    rules = transaction_rules(load_dataset_config("synthetic"))
    rule = next(r for r in rules if (r.kind, r.column) == ("between", "timestamp"))
    stamps = [dt.datetime(2024, 5, 1) + dt.timedelta(hours=h) for h in range(2000)]
    one = pl.DataFrame({"timestamp": [*stamps, dt.datetime(1970, 1, 1)]})
    assert _only(one, rule).success and _polars_count(one, rule) == 1
    many = pl.DataFrame({"timestamp": [*stamps[:100], *[dt.datetime(1899, 12, 30)] * 5]})
    result = _only(many, rule)
    assert not result.success and "Unix time 0" in result.message


def test_datetime_bounds_count_as_polars_does() -> None:
    """A timestamp column with null and bound rules only reaches GX as µs since the epoch:
    the counts match polars', samples are ISO 8601 again."""
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 9), "1h", eager=True
    ).to_list()
    df = pl.DataFrame({"t": [*stamps, None]}, schema={"t": pl.Datetime("us")})
    rule = Rule(
        "between", "t", min_value=dt.datetime(2024, 1, 1, 2), max_value=dt.datetime(2024, 1, 1, 6)
    )
    result = _only(df, rule)
    assert result.unexpected_count == _polars_count(df, rule) == 5  # 00, 01, 07, 08, 09
    assert result.sample_values[:2] == ["2024-01-01T00:00:00", "2024-01-01T01:00:00"]
    assert result.message.endswith("outside [2024-01-01 02:00:00, 2024-01-01 06:00:00]")


def test_a_few_lines_without_a_timestamp_are_quarantined_like_stray_dates() -> None:
    """7 blank times in a 60,813-line export stopped the run ('every transaction has a
    timestamp'), while as many stray dates were quarantined: blank times now follow the
    stray dates' tolerance, and a file whose time column is mostly blank still stops."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.rules import transaction_rules
    from churn_assets.raw.checks import suite_check

    rules = transaction_rules(load_dataset_config("synthetic"))
    rule = next(r for r in rules if (r.kind, r.column) == ("not_null", "timestamp"))
    assert rule.blocking
    stamps = [dt.datetime(2024, 5, 1) + dt.timedelta(minutes=m) for m in range(1999)]
    few = pl.DataFrame({"timestamp": [*stamps, None]})
    assert _only(few, rule).success and _polars_count(few, rule) == 1
    check = suite_check("raw_transactions", validate(few, [rule], "t"), None)
    assert check.passed and check.description == (
        "1 row(s) break not_null on 'timestamp', within its tolerance: quarantined"
    )
    many = pl.DataFrame({"timestamp": [*stamps[:990], *[None] * 10]})
    result = _only(many, rule)
    assert not result.success and result.unexpected_count == 10
    assert "cannot be placed before or after the cut-off" in result.message
