"""Convert one of `backtesting`'s data files to the CSV that `python -m training train|finetune --data` reads.

    python examples/convert_backtesting_csv.py EURUSD examples/eurusd_1h.csv

`backtesting` (installed with ``pip install --no-deps backtesting``; only its data files are read, so its plotting
dependencies are not needed) ships ``EURUSD.csv`` (hourly FX, 5,000 bars, 2017-04 to 2018-02) and ``GOOG.csv``
(daily) as ``,Open,High,Low,Close,Volume`` with naive timestamps. The output has the header
``timestamp,open,high,low,close,volume`` and keeps the timestamps naive and the numbers as written (no float
round trip), so ``--csv-timezone UTC`` states the one assumption made: backtesting does not say which zone its
timestamps are in. Rows are not checked here; `training.data.load_csv` checks every one with the API's rules.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

SOURCE_HEADER = ["", "Open", "High", "Low", "Close", "Volume"]
TARGET_HEADER = ["timestamp", "open", "high", "low", "close", "volume"]


def backtesting_data(name: str) -> Path:
    spec = importlib.util.find_spec("backtesting")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("backtesting is not installed, run `pip install --no-deps 'backtesting==0.6.6'`")
    return Path(next(iter(spec.submodule_search_locations))) / "test" / f"{name}.csv"


def convert(source: Path, target: Path) -> int:
    with source.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0] != SOURCE_HEADER:
        raise SystemExit(f"{source}: header {rows[0] if rows else None} is not {SOURCE_HEADER}")
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(TARGET_HEADER)
        # "2017-04-19 09:00:00" -> "2017-04-19T09:00:00": ISO 8601, as the API's timestamps are.
        writer.writerows([row[0].replace(" ", "T"), *row[1:]] for row in rows[1:])
    return len(rows) - 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    count = convert(backtesting_data(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {count} rows to {sys.argv[2]}")
