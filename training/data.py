"""Load OHLCV candles and check every row with the API's own rules (`runtime.schemas.validate_candle`).

Nothing is dropped or repaired: a source with any invalid row raises one `DataValidationError` that lists the
offending lines and reasons. Sources: the daily S&P 500 and NASDAQ Composite series shipped with the `arch`
package (1999-2018), or a user CSV with columns ``timestamp,open,high,low,close,volume``.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import ValidationError

from runtime.constants import FEATURES
from runtime.schemas import Candle, validate_candle
from training.errors import DataValidationError

logger = logging.getLogger(__name__)

ARCH_SOURCES: Final = ("sp500", "nasdaq")
#: `--data` values that name built-in data; anything else is a CSV path.
BUILTIN_CHOICES: Final = (*ARCH_SOURCES, "both")
CSV_COLUMNS: Final = ("timestamp", *FEATURES)


@dataclass(frozen=True)
class Series:
    """One validated instrument: float64 frame indexed by UTC timestamps, columns `FEATURES`, strictly increasing."""

    name: str
    frame: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "row"


def _validate_rows(source: str, rows: Iterable[tuple[str, dict[str, Any] | str]]) -> list[Candle]:
    """Validate (location, raw row) pairs; collect every problem, including time order, then raise once.

    A row given as a string is a problem the reader already found (e.g. a wrong number of cells).
    """
    points: list[Candle] = []
    problems: list[tuple[str, str]] = []
    previous: tuple[str, datetime] | None = None
    for where, raw in rows:
        if isinstance(raw, str):
            problems.append((where, raw))
            continue
        try:
            point = validate_candle(raw)
        except ValidationError as e:
            problems.extend((where, f"{_format_loc(err['loc'])}: {err['msg']}") for err in e.errors())
            continue
        if previous is not None and point["timestamp"] <= previous[1]:
            problems.append(
                (
                    where,
                    f"timestamp {point['timestamp'].isoformat()} is not after {previous[1].isoformat()} "
                    f"({previous[0]}); rows must be in strictly increasing time order",
                )
            )
        previous = (where, point["timestamp"])
        points.append(point)
    if problems:
        raise DataValidationError(source, problems)
    return points


def bar_seconds(frame: pd.DataFrame) -> int:
    """The series' bar interval: the median spacing of consecutive candles, in whole seconds (0 for one row).

    The median, so weekends, holidays and missing bars do not count: daily trading data gives 86400, hourly FX 3600.
    """
    if len(frame) < 2:
        return 0
    steps = np.diff(frame.index.to_numpy()) / np.timedelta64(1, "s")  # whatever the index's resolution
    return round(float(np.median(steps)))


def _points_to_frame(points: list[Candle]) -> pd.DataFrame:
    index = pd.DatetimeIndex([p["timestamp"] for p in points]).tz_convert("UTC")
    values = np.array([[p[f] for f in FEATURES] for p in points], dtype=np.float64)
    return pd.DataFrame(values, index=index, columns=list(FEATURES))


def load_arch(name: str) -> Series:
    """Load one of arch's daily index series, localised to UTC, with every row validated.

    arch ships naive dates (one row per trading day); they are the session dates, so they are localised to UTC
    midnight rather than guessed into exchange-local time. Its ``Adj Close`` equals ``Close`` for these indices
    (no dividends on a price index) and is not used.
    """
    if name not in ARCH_SOURCES:
        raise ValueError(f"Unknown arch data set {name!r}. Available: {', '.join(ARCH_SOURCES)}")
    try:
        from arch.data import nasdaq, sp500
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("arch is not installed, run `pip install neuraltrade-edge[train]`") from e
    raw = (sp500 if name == "sp500" else nasdaq).load()
    index = pd.DatetimeIndex(raw.index).tz_localize("UTC")

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        for ts, o, h, lo, c, v in zip(
            index, raw["Open"], raw["High"], raw["Low"], raw["Close"], raw["Volume"], strict=True
        ):
            yield (
                f"{name} {ts.date().isoformat()}",
                {"timestamp": ts.to_pydatetime(), "open": o, "high": h, "low": lo, "close": c, "volume": v},
            )

    frame = _points_to_frame(_validate_rows(f"arch.data.{name}", rows()))
    zero_volume = [ts.date().isoformat() for ts in frame.index[frame["volume"] == 0]]
    flat = int((frame["high"] == frame["low"]).sum())
    if zero_volume:
        # Valid by the API's rules (volume >= 0) and the model must cope with it, so kept and reported.
        logger.info("%s: %d day(s) with zero volume kept as-is: %s", name, len(zero_volume), zero_volume)
    provenance = {
        "source": f"arch.data.{name}.load()",
        "rows": len(frame),
        "first": frame.index[0].isoformat(),
        "last": frame.index[-1].isoformat(),
        "bar_seconds": bar_seconds(frame),
        "timezone_note": "arch dates are naive trading days; localised to UTC midnight",
        "zero_volume_days": zero_volume,
        "days_with_high_equal_low": flat,
        "adj_close_equals_close": bool((raw["Adj Close"] == raw["Close"]).all()),
        "sha256_of_values": _frame_digest(frame),
    }
    return Series(name=name, frame=frame, provenance=provenance)


def _parse_timestamp(text: str, zone: ZoneInfo | None) -> datetime | str:
    """Attach `zone` to a naive ISO timestamp; anything else is left for validate_candle to judge."""
    if zone is None:
        return text
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return text  # validate_candle reports the unparseable value with its own message
    return ts.replace(tzinfo=zone) if ts.tzinfo is None else ts


def load_csv(path: str | Path, *, timezone: str | None = None) -> Series:
    """Load a CSV with header ``timestamp,open,high,low,close,volume`` (extra columns are an error).

    Timestamps must carry a UTC offset (ISO 8601, e.g. ``2024-01-02T00:00:00+00:00``), as the API requires;
    `timezone` (an IANA name such as ``America/New_York``) is attached to naive timestamps instead. Line numbers in
    errors count the header as line 1.
    """
    path = Path(path)
    zone: ZoneInfo | None = None
    if timezone is not None:
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"csv timezone {timezone!r} is not a known IANA time zone, e.g. 'UTC'") from e
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataValidationError(str(path), [("line 1", "file is empty; expected a header row")])
        header = [h.strip().lower() for h in header]
        if tuple(header) != CSV_COLUMNS:
            raise DataValidationError(
                str(path), [("line 1", f"header is {','.join(header)!r}; expected {','.join(CSV_COLUMNS)!r}")]
            )

        def rows() -> Iterator[tuple[str, dict[str, Any] | str]]:
            for line_no, cells in enumerate(reader, start=2):
                if len(cells) > len(CSV_COLUMNS):
                    yield (
                        f"line {line_no}",
                        f"{len(cells)} cells; expected {len(CSV_COLUMNS)} ({','.join(CSV_COLUMNS)})",
                    )
                    continue
                # Short rows: missing cells become None so validation names each missing field.
                cells = cells + [""] * (len(CSV_COLUMNS) - len(cells))
                raw: dict[str, Any] = {
                    col: (cell.strip() if cell.strip() != "" else None)
                    for col, cell in zip(CSV_COLUMNS, cells, strict=True)
                }
                if isinstance(raw["timestamp"], str):
                    raw["timestamp"] = _parse_timestamp(raw["timestamp"], zone)
                yield f"line {line_no}", raw

        points = _validate_rows(str(path), rows())
    if not points:
        raise DataValidationError(str(path), [("line 2", "no data rows after the header")])
    frame = _points_to_frame(points)
    provenance = {
        "source": f"csv:{path.name}",
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "rows": len(frame),
        "first": frame.index[0].isoformat(),
        "last": frame.index[-1].isoformat(),
        "bar_seconds": bar_seconds(frame),
        "csv_timezone": timezone,
    }
    return Series(name=path.stem, frame=frame, provenance=provenance)


def load_source(spec: str, *, csv_timezone: str | None = None) -> list[Series]:
    """`--data` value → validated series: ``sp500``, ``nasdaq``, ``both`` or a CSV path."""
    if spec == "both":
        return [load_arch(name) for name in ARCH_SOURCES]
    if spec in ARCH_SOURCES:
        return [load_arch(spec)]
    path = Path(spec)
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise ValueError(f"--data {spec!r} is neither one of {', '.join(BUILTIN_CHOICES)} nor an existing .csv file")
    return [load_csv(path, timezone=csv_timezone)]


def _frame_digest(frame: pd.DataFrame) -> str:
    """Fingerprint of the validated values, so a manifest records exactly which data trained the model."""
    digest = hashlib.sha256(np.ascontiguousarray(frame.to_numpy(np.float64)).tobytes())
    digest.update(np.asarray(pd.DatetimeIndex(frame.index).asi8).tobytes())
    return digest.hexdigest()
