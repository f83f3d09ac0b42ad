"""Transaction timestamps as APIs and exports write them: ISO 8601 with "Z" or a UTC offset,
a format with `%z`, Parquet with a time zone. All become UTC without a time zone, as the
cut-offs and windows are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.ingest import ingest_transactions

CONFIG = """
name: shop
transactions:
  path: {path}
  customer_id: account
  timestamp: at
{fmt}
  amount: amount
labels:
  source: transactions
"""

UTC_10 = dt.datetime(2024, 4, 1, 10, 0)


def _ingest(tmp_path: Path, stamps: list[str], fmt: str = "", parquet: pl.Series | None = None):
    n = len(stamps) if parquet is None else len(parquet)
    frame = pl.DataFrame(
        {
            "account": [f"A{i}" for i in range(n)],
            "at": stamps if parquet is None else parquet,
            "amount": [1.0] * n,
        }
    )
    path = tmp_path / ("t.csv" if parquet is None else "t.parquet")
    if parquet is None:
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    fmt_line = f'  timestamp_format: "{fmt}"' if fmt else ""
    (tmp_path / "shop.yaml").write_text(CONFIG.format(path=path, fmt=fmt_line))
    res = ingest_transactions(load_dataset_config(str(tmp_path / "shop.yaml")), str(tmp_path))
    return res, res.frame.sort("customer_id")["timestamp"]


def test_iso_8601_with_z_or_an_offset_is_read_as_utc(tmp_path):
    res, ts = _ingest(
        tmp_path,
        [
            "2024-04-01T10:00:00Z",
            "2024-04-01T12:00:00+02:00",
            "2024-04-01 04:30:00.250-05:30",
            "2024-04-01T10:00:00z",
            "yesterday",
        ],
    )
    assert ts.dtype == pl.Datetime("us") and ts.dtype.time_zone is None
    assert ts.to_list()[:4] == [
        UTC_10,
        UTC_10,
        dt.datetime(2024, 4, 1, 10, 0, 0, 250_000),
        UTC_10,
    ]
    assert ts[4] is None and res.parse_errors == {"timestamp": 1}


def test_unix_times_without_a_format_are_named_as_such(tmp_path):
    """An export that switched to Unix seconds: values_parse said only 'read as datetime with
    ISO 8601 (set the format in the config)'; it names the unit and the setting now."""
    res, ts = _ingest(tmp_path, ["1768866749", "1768866750"])
    assert ts.to_list() == [None, None] and res.parse_errors == {"timestamp": 2}
    assert res.parse_hints["timestamp"] == (
        "e.g. '1768866749', read as datetime with ISO 8601; it looks like Unix time in "
        "seconds: set `timestamp_format: epoch_s` (a column's `format`) in the config"
    )
    res, _ = _ingest(tmp_path, ["1768866749000"])
    assert "`timestamp_format: epoch_ms`" in res.parse_hints["timestamp"]


def test_iso_8601_without_an_offset_is_taken_as_it_is(tmp_path):
    res, ts = _ingest(tmp_path, ["2024-04-01T10:00:00", "2024-04-01 10:00:00"])
    assert res.parse_errors == {}
    assert ts.to_list() == [UTC_10, UTC_10]


def test_without_a_format_only_iso_8601_is_read(tmp_path):
    """US or European dates and no `timestamp_format`: every line fails values_parse with
    a hint to set it (polars guessed a format from the first value: '07/01/2025' was read
    day first, six months early, and nothing said so)."""
    res, ts = _ingest(tmp_path, ["07/01/2025 06:00", "05/06/2025 06:00", "12/31/2025 23:00"])
    assert ts.to_list() == [None, None, None]
    assert res.parse_errors == {"timestamp": 3}
    assert "ISO 8601 (set the format in the config)" in res.parse_hints["timestamp"]
    res, ts = _ingest(tmp_path, ["2025-07-01 06:00", "2025-07-01T06:00:00", "2025-07-02"])
    assert ts.to_list() == [
        dt.datetime(2025, 7, 1, 6, 0),
        dt.datetime(2025, 7, 1, 6, 0),
        dt.datetime(2025, 7, 2),
    ]
    assert res.parse_errors == {}


def test_a_format_with_an_offset_is_read_as_utc(tmp_path):
    res, ts = _ingest(tmp_path, ["01/04/2024 12:00 +0200"], fmt="%d/%m/%Y %H:%M %z")
    assert res.parse_errors == {}
    assert ts.dtype.time_zone is None and ts.to_list() == [UTC_10]
    res, ts = _ingest(tmp_path, ["2024-04-01T10:00:00Z"], fmt="%Y-%m-%dT%H:%M:%S%z")
    assert res.parse_errors == {} and ts.to_list() == [UTC_10]  # "Z": +00:00


def test_parquet_with_a_time_zone_is_read_as_utc(tmp_path):
    berlin = pl.Series([dt.datetime(2024, 4, 1, 12, 0)]).dt.replace_time_zone("Europe/Berlin")
    res, ts = _ingest(tmp_path, [], parquet=berlin)
    assert res.parse_errors == {}
    assert ts.dtype.time_zone is None and ts.to_list() == [UTC_10]


def test_seconds_and_milliseconds_since_1970_are_read_as_utc(tmp_path):
    """Unix times as event exports write them, in text and as Parquet integers; a number of
    the wrong size for its unit (past 2200) is a bad value, never year 53,000."""
    res, ts = _ingest(tmp_path, ["1711965600", "1711965600.5", "", "1711965600000"], "epoch_s")
    assert ts.to_list()[:2] == [UTC_10, UTC_10 + dt.timedelta(milliseconds=500)]
    assert res.parse_errors == {"timestamp": 1}  # the ms value read as seconds
    res, ts = _ingest(
        tmp_path, [], "epoch_ms", parquet=pl.Series([1711965600000, 1711965600250], dtype=pl.Int64)
    )
    assert res.parse_errors == {}
    assert ts.to_list() == [UTC_10, UTC_10 + dt.timedelta(milliseconds=250)]


def test_draft_config_recognises_unix_times_by_their_size(tmp_path):
    from churn_assets.lib.config_draft import draft_config

    for unit, scale in (("epoch_s", 1), ("epoch_ms", 1000)):
        path = tmp_path / f"{unit}.csv"
        pl.DataFrame(
            {"account": ["A1", "A2", "A3"], "at": [1711965600 * scale] * 3, "amount": [1.0] * 3}
        ).write_csv(path)
        text = draft_config(str(path), timestamp="at", id_column="account")
        assert f'timestamp_format: "{unit}"   # CHECK: numbers read as' in text
        assert "is 2024-04-01 10:00:00" in text


def _ingest_in_zone(tmp_path: Path, stamps: list[str], zone: str, fmt: str = ""):
    """:func:`_ingest` with ``timezone: zone`` in the config."""
    res, ts = None, None
    text = CONFIG.replace("  amount: amount", f"  amount: amount\n  timezone: {zone}")
    path = tmp_path / "t.csv"
    n = len(stamps)
    pl.DataFrame(
        {"account": [f"A{i}" for i in range(n)], "at": stamps, "amount": [1.0] * n}
    ).write_csv(path)
    fmt_line = f'  timestamp_format: "{fmt}"' if fmt else ""
    (tmp_path / "shop.yaml").write_text(text.format(path=path, fmt=fmt_line))
    res = ingest_transactions(load_dataset_config(str(tmp_path / "shop.yaml")), str(tmp_path))
    ts = res.frame.sort("customer_id")["timestamp"]
    return res, ts


def test_local_times_of_a_time_zone_become_utc_with_daylight_saving_time(tmp_path):
    """``timezone``: local times converted to UTC (summer time included); times with an
    offset are UTC already; a time the clocks skipped is a bad value."""
    res, ts = _ingest_in_zone(
        tmp_path,
        [
            "2024-01-15 11:00:00",  # CET, +01:00
            "2024-04-01 12:00:00",  # CEST, +02:00
            "2024-03-31 02:30:00",  # skipped by the clocks
        ],
        "Europe/Berlin",
    )
    assert ts.to_list()[:2] == [dt.datetime(2024, 1, 15, 10, 0), UTC_10]
    assert res.parse_errors == {"timestamp": 1}
    res, ts = _ingest_in_zone(tmp_path, ["2024-04-01T10:00:00Z"], "Europe/Berlin")
    assert ts.to_list() == [UTC_10]
    res, ts = _ingest_in_zone(tmp_path, ["1711965600"], "Europe/Berlin", "epoch_s")
    assert ts.to_list() == [UTC_10]


def test_a_zone_name_after_each_time_is_drafted_as_the_timezone(tmp_path):
    """'2024-04-01 12:00:00 Europe/Berlin': polars' %Z would read the name and keep the local
    time; the draft writes the name as text and the zone as ``timezone``, and a hand-written
    %Z is refused."""
    import pytest
    import yaml

    from churn_assets.lib.config_draft import DraftError, draft_config
    from churn_assets.lib.datasets import DatasetConfigError

    path = tmp_path / "zoned.csv"
    stamps = ["2024-04-01 12:00:00 Europe/Berlin", "2024-01-15 11:00:00 Europe/Berlin"]
    pl.DataFrame({"account": ["A1", "A2"], "at": stamps, "amount": [1.0, 2.0]}).write_csv(path)
    text = draft_config(str(path), timestamp="at", id_column="account")
    cfg = yaml.safe_load(text)["transactions"]
    assert cfg["timezone"] == "Europe/Berlin"
    assert cfg["timestamp_format"] == "%Y-%m-%d %H:%M:%S Europe/Berlin"
    res, ts = _ingest_in_zone(tmp_path, stamps, "Europe/Berlin", cfg["timestamp_format"])
    assert res.parse_errors == {}
    assert ts.to_list() == [UTC_10, dt.datetime(2024, 1, 15, 10, 0)]

    with pytest.raises(DatasetConfigError, match="%Z reads a time zone name without applying"):
        _ingest(tmp_path, stamps, fmt="%Y-%m-%d %H:%M:%S %Z")
    with pytest.raises(DatasetConfigError, match="not an IANA time zone name"):
        _ingest_in_zone(tmp_path, ["2024-04-01 12:00:00"], "Mars/Olympus")
    mixed = tmp_path / "mixed.csv"
    pl.DataFrame(
        {"account": ["A1", "A2"], "at": [stamps[0], "2024-04-01 06:00:00 America/New_York"]}
    ).write_csv(mixed)
    with pytest.raises(DraftError, match="name 2 time zones"):
        draft_config(str(mixed), timestamp="at", id_column="account")


def test_each_value_is_read_with_its_own_offset_or_as_a_local_time(tmp_path):
    """A file whose first value carries an offset read its naive values as UTC, ignoring
    ``timezone`` (hours off, every check passing); one whose first value is naive or
    unreadable failed every value with an offset. Each value now goes by its own form."""
    stamps = [
        "2024-04-01T15:30:00+05:30",
        "2024-04-01 15:30:00",  # local to the zone
        "2024-04-01T03:00-07:00",  # an offset without seconds
        "2024-04-01T10:00:00Z",
    ]
    res, ts = _ingest_in_zone(tmp_path, stamps, "Asia/Kolkata")
    assert res.parse_errors == {} and ts.to_list() == [UTC_10] * 4
    res, ts = _ingest(tmp_path, stamps)  # no zone: naive values are UTC
    assert res.parse_errors == {}
    assert ts.to_list() == [UTC_10, dt.datetime(2024, 4, 1, 15, 30), UTC_10, UTC_10]
    res, ts = _ingest(tmp_path, ["not-a-date", *stamps[::-1]])  # first value naive: "Z" etc.
    assert res.parse_errors == {"timestamp": 1}
    assert ts.to_list() == [None, UTC_10, UTC_10, dt.datetime(2024, 4, 1, 15, 30), UTC_10]


def test_a_date_alone_is_its_calendar_day_in_any_time_zone(tmp_path):
    """Dates without a time of day and an eastern ``timezone`` became the evening before
    in UTC (18:30), moving cut-offs a day and making day counts fractional."""
    res, ts = _ingest_in_zone(tmp_path, ["2024-04-01", "2024-04-01 15:30:00"], "Asia/Kolkata")
    assert res.parse_errors == {}
    assert ts.to_list() == [dt.datetime(2024, 4, 1), UTC_10]
    res, ts = _ingest_in_zone(tmp_path, ["01/04/2024"], "Asia/Kolkata", "%d/%m/%Y")
    assert ts.to_list() == [dt.datetime(2024, 4, 1)]
    res, ts = _ingest_in_zone(tmp_path, ["01/04/2024 15:30"], "Asia/Kolkata", "%d/%m/%Y %H:%M")
    assert ts.to_list() == [UTC_10]


def test_a_time_the_clocks_skipped_is_named_as_such(tmp_path):
    res, _ = _ingest_in_zone(tmp_path, ["2024-03-10 02:30:00"], "America/New_York")
    assert res.parse_errors == {"timestamp": 1}
    hint = res.parse_hints["timestamp"]
    assert "'2024-03-10 02:30:00': no such time in America/New_York" in hint


def test_two_digit_years_are_drafted_as_such_and_read_in_this_century(tmp_path):
    """'10/07/24 10:56' was drafted as '%d/%m/%Y %H:%M', read as year 24 and refused as
    outside 1971-tomorrow, a message about typos; the draft now takes '%y', said."""
    from churn_assets.lib.config_draft import draft_config

    path = tmp_path / "two.csv"
    stamps = ["10/07/24 10:56", "13/07/24 11:00", "01/12/99 09:15"] * 10
    pl.DataFrame(
        {"account": ["A1", "A2", "A3"] * 10, "at": stamps, "amount": [1.0] * 30}
    ).write_csv(path)
    text = draft_config(str(path), timestamp="at", id_column="account")
    assert 'timestamp_format: "%d/%m/%y %H:%M"   # CHECK: two-digit years' in text
    res, ts = _ingest(tmp_path, stamps[:3], fmt="%d/%m/%y %H:%M")
    assert res.parse_errors == {}
    assert sorted(ts.to_list()) == [
        dt.datetime(1999, 12, 1, 9, 15),
        dt.datetime(2024, 7, 10, 10, 56),
        dt.datetime(2024, 7, 13, 11, 0),
    ]


def test_twelve_hour_clock_times_are_drafted_and_read(tmp_path):
    """'12/08/2025 02:17 PM', as US exports write times, matched no common format and the
    draft was refused; it is now drafted, and ingestion reads PM as the afternoon."""
    from churn_assets.lib.config_draft import draft_config

    path = tmp_path / "us.csv"
    stamps = ["12/08/2025 02:17 PM", "05/14/2024 10:47 AM", "05/30/2024 12:05 AM"] * 10
    pl.DataFrame(
        {"account": ["A1", "A2", "A3"] * 10, "at": stamps, "amount": [1.0] * 30}
    ).write_csv(path)
    text = draft_config(str(path), timestamp="at", id_column="account")
    assert 'timestamp_format: "%m/%d/%Y %I:%M %p"\n' in text
    res, ts = _ingest(tmp_path, stamps[:3], fmt="%m/%d/%Y %I:%M %p")
    assert res.parse_errors == {}
    assert ts.to_list() == [
        dt.datetime(2025, 12, 8, 14, 17),
        dt.datetime(2024, 5, 14, 10, 47),
        dt.datetime(2024, 5, 30, 0, 5),
    ]


def test_a_format_no_common_one_matches_is_given_with_timestamp_format(tmp_path):
    """Times in no common format: the refusal says to give --timestamp-format (the draft it
    told the user to edit was never written); given, the draft takes it once it reads the
    times, and a format that does not read them is refused with a time it left unread."""
    import pytest

    from churn_assets.lib.config_draft import DraftError, draft_config

    path = tmp_path / "named.csv"
    stamps = ["03 Dec 2026 14:05", "28 Nov 2026 09:00", "01 Jan 2025 23:59"] * 10
    pl.DataFrame(
        {"account": ["A1", "A2", "A3"] * 10, "at": stamps, "amount": [1.0] * 30}
    ).write_csv(path)
    with pytest.raises(DraftError, match="--timestamp-format"):
        draft_config(str(path), timestamp="at", id_column="account")
    text = draft_config(
        str(path), timestamp="at", id_column="account", timestamp_format="%d %b %Y %H:%M"
    )
    assert 'timestamp_format: "%d %b %Y %H:%M"\n' in text
    with pytest.raises(DraftError, match=r"reads 0% of the times in column 'at' \(e\.g\. '03 Dec"):
        draft_config(str(path), timestamp="at", id_column="account", timestamp_format="%Y-%m-%d")
    res, ts = _ingest(tmp_path, stamps[:3], fmt="%d %b %Y %H:%M")
    assert res.parse_errors == {}
    assert ts.to_list()[0] == dt.datetime(2026, 12, 3, 14, 5)
