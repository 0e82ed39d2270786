from datetime import UTC, datetime
from pathlib import Path

import pytest

pytest.importorskip("pandas")

from ohlcv_factories import synthetic_rows, write_csv

from training.data import load_csv, load_source
from training.errors import DataValidationError


def test_clean_csv_loads_as_utc(tmp_path: Path) -> None:
    series = load_csv(write_csv(tmp_path, synthetic_rows(10)))
    assert list(series.frame.columns) == ["open", "high", "low", "close", "volume"]
    assert len(series.frame) == 10
    assert str(series.frame.index.tz) == "UTC"
    assert series.frame.index.is_monotonic_increasing


@pytest.mark.parametrize(
    ("line", "row_patch", "match"),
    [
        pytest.param(3, {2: 90.0, 3: 110.0}, r"line 3: .*high \(90.0\) must be >= low \(110.0\)", id="high-below-low"),
        pytest.param(4, {4: -1.0}, r"line 4: close: Input should be greater than", id="negative-close"),
        pytest.param(5, {5: -5}, r"line 5: volume: Input should be greater than or equal to 0", id="negative-volume"),
        pytest.param(6, {1: "nan"}, r"line 6: open: Input should be a finite number", id="nan-open"),
        pytest.param(7, {0: "2020-01-06T00:00:00"}, r"line 7: timestamp: Input should have timezone info", id="naive"),
        pytest.param(8, {0: "yesterday"}, r"line 8: timestamp: Input should be a valid datetime", id="garbage-time"),
        pytest.param(9, {4: ""}, r"line 9: close: Input should be a valid number", id="missing-close"),
        pytest.param(10, {1: 200.0}, r"line 10: .*open \(200.0\) must lie within", id="open-above-high"),
    ],
)
def test_bad_row_is_reported_with_its_line(tmp_path: Path, line: int, row_patch: dict[int, object], match: str) -> None:
    rows = synthetic_rows(12)
    for col, value in row_patch.items():
        rows[line - 2][col] = value  # line 1 is the header
    with pytest.raises(DataValidationError, match=match) as info:
        load_csv(write_csv(tmp_path, rows))
    assert len(info.value.problems) == 1  # the other rows are fine and nothing else is reported


def test_every_problem_is_listed_and_the_list_is_capped(tmp_path: Path) -> None:
    rows = synthetic_rows(40)
    for row in rows[:30]:
        row[5] = -1  # negative volume on lines 2..31
    with pytest.raises(DataValidationError, match=r"30 invalid row\(s\)") as info:
        load_csv(write_csv(tmp_path, rows))
    message = str(info.value)
    assert "line 2:" in message and "line 21:" in message
    assert "line 22:" not in message  # beyond the first 20
    assert "... and 10 more problem(s)" in message
    assert [where for where, _ in info.value.problems] == [f"line {i}" for i in range(2, 32)]


def test_out_of_order_and_duplicate_timestamps_are_errors(tmp_path: Path) -> None:
    rows = synthetic_rows(6)
    rows[3][0] = rows[2][0]  # duplicate on line 5
    rows[5][0] = rows[0][0]  # goes back in time on line 7
    with pytest.raises(DataValidationError, match=r"line 5: timestamp .* is not after") as info:
        load_csv(write_csv(tmp_path, rows))
    assert [where for where, _ in info.value.problems] == ["line 5", "line 7"]


@pytest.mark.parametrize(
    ("header", "match"),
    [
        pytest.param("time,open,high,low,close,volume", "expected 'timestamp,open", id="renamed-column"),
        pytest.param("timestamp,open,high,low,close", "expected 'timestamp,open", id="missing-column"),
    ],
)
def test_wrong_header_is_rejected(tmp_path: Path, header: str, match: str) -> None:
    with pytest.raises(DataValidationError, match=match):
        load_csv(write_csv(tmp_path, synthetic_rows(3), header=header))


def test_extra_cells_are_an_error(tmp_path: Path) -> None:
    rows = synthetic_rows(4)
    rows[1].append("surprise")
    with pytest.raises(DataValidationError, match=r"line 3: 7 cells; expected 6 \(timestamp,open") as info:
        load_csv(write_csv(tmp_path, rows))
    assert len(info.value.problems) == 1


def test_csv_timezone_localises_naive_timestamps(tmp_path: Path) -> None:
    rows = synthetic_rows(3)
    for i, row in enumerate(rows):
        row[0] = f"2024-03-0{i + 1}T09:30:00"
    series = load_csv(write_csv(tmp_path, rows), timezone="America/New_York")
    assert series.frame.index[0] == datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def test_unknown_csv_timezone_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a known IANA time zone"):
        load_csv(write_csv(tmp_path, synthetic_rows(3)), timezone="Mars/Olympus")


def test_unknown_data_spec_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither one of sp500, nasdaq, both"):
        load_source(str(tmp_path / "nope.csv"))


def test_arch_data_is_validated_and_utc() -> None:
    pytest.importorskip("arch")
    (series,) = load_source("nasdaq")
    assert str(series.frame.index.tz) == "UTC"
    assert series.frame.index[0].isoformat() == "1999-01-04T00:00:00+00:00"
    assert len(series.frame) == 5031
    # Zero volume passes the API's rules; the loader keeps it and says so.
    assert series.provenance["zero_volume_days"] == ["2015-05-12", "2018-01-09"]
    assert series.provenance["bar_seconds"] == 86400  # trading days: weekends and holidays are not the bar


def test_the_bar_interval_is_the_median_spacing_so_gaps_do_not_count(tmp_path: Path) -> None:
    from datetime import timedelta

    hourly = synthetic_rows(60)
    start = datetime(2020, 1, 3, 20, tzinfo=UTC)  # a Friday evening: the weekend falls inside the series
    times = [start + timedelta(hours=i) for i in range(60)]
    times = [t if t.weekday() < 5 else t + timedelta(days=2) for t in times]  # hours that would fall on Sat/Sun
    times = sorted(set(times))
    rows = [[t.isoformat(), *row[1:]] for t, row in zip(times, hourly, strict=False)]
    assert load_csv(write_csv(tmp_path, rows)).provenance["bar_seconds"] == 3600
    assert load_csv(write_csv(tmp_path, synthetic_rows(10), name="d.csv")).provenance["bar_seconds"] == 86400
    assert load_csv(write_csv(tmp_path, synthetic_rows(1), name="one.csv")).provenance["bar_seconds"] == 0


@pytest.mark.parametrize(
    ("intervals", "words"),
    [
        ([86400], ("daily candles", "days")),
        ([3600, 3600], ("hourly candles", "hours")),
        ([60], ("one-minute candles", "minutes")),
        ([900], ("15-minute candles", "candles")),
        ([7200], ("2-hour candles", "candles")),
        ([45], ("45-second candles", "candles")),
        ([86400, 3600], ("candles", "candles")),  # series that disagree
        ([None], ("candles", "candles")),  # a manifest from before bar_seconds was recorded
        ([0], ("candles", "candles")),
    ],
)
def test_the_report_names_the_bars_it_was_trained_on(intervals: list[int | None], words: tuple[str, str]) -> None:
    pytest.importorskip("matplotlib")  # training.report draws the plots
    from training.report import bar_words

    series = [{"source": "x"} if i is None else {"source": "x", "bar_seconds": i} for i in intervals]
    assert bar_words(series) == words
