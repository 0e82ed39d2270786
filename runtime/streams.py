"""Rolling windows for streamed candles: one connection's validated last 60 candles per (exchange, symbol).

Knows no protocol. A message is checked in full against the stored window (`prepare`) before anything changes,
and its candles are stored (`commit`) only once the message has been answered: a refused message — a broken
rule, too many symbols, or a signal that could not be computed (overload, rate limit, deadline) — leaves the
window exactly as it was, so the client can send the same message again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from runtime.constants import WINDOW_LENGTH
from runtime.decoding import StreamCandles, Window
from runtime.errors import TooManySymbols, ValidationFailed, detail
from runtime.schemas import ohlc_violations

Key = tuple[str, str]  # (exchange, symbol)


@dataclass(frozen=True, slots=True)
class Track:
    """The stored candles of one symbol: up to 60 rows (float64, as sent), oldest first, and the newest time."""

    rows: npt.NDArray[np.float64]  # (n, 5) in `FEATURES` order, n <= 60
    last: datetime


@dataclass(frozen=True, slots=True)
class Update:
    """A checked message and the track it would leave; nothing is stored until `SymbolWindows.commit`."""

    key: Key
    track: Track

    @property
    def have(self) -> int:
        return len(self.track.rows)

    def window(self) -> Window:
        """The latest 60 candles as `/predict` would decode them (same float32 window, same float64 closes)."""
        rows = self.track.rows
        exchange, symbol = self.key
        return Window(symbol, exchange, rows.astype(np.float32), rows[:, 3].tolist(), self.track.last)


def _ohlc_field(template: str) -> str:
    """The value an `ohlc_violations` message blames: 'high (...) must be >= low' -> high."""
    return template.split(" ", 1)[0]


class SymbolWindows:
    """One connection's windows, keyed by (exchange, symbol); freed with the connection."""

    def __init__(self, max_symbols: int) -> None:
        self.max_symbols = max_symbols
        self._tracks: dict[Key, Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def have(self, exchange: str, symbol: str) -> int:
        track = self._tracks.get((exchange, symbol))
        return 0 if track is None else len(track.rows)

    def prepare(self, msg: StreamCandles) -> Update:
        """Check `msg` against its stored window: every candle's low <= open, close <= high, and timestamps
        strictly after the previous candle (the stored one for the first). Raises `ValidationFailed` naming every
        broken rule (``candles.3.high``), or `TooManySymbols` for a symbol past the limit; changes nothing."""
        key = (msg.exchange, msg.symbol)
        stored = self._tracks.get(key)
        if stored is None and len(self._tracks) >= self.max_symbols:
            raise TooManySymbols(
                f"this connection already tracks {len(self._tracks)} symbols, the limit "
                f"(EDGE_STREAM_MAX_SYMBOLS); {msg.symbol} on {msg.exchange} was not stored",
                details=[detail(("symbol",), f"more than {self.max_symbols} symbols", "too_many_symbols")],
            )
        details = []
        times = msg.timestamps
        previous = None if stored is None else stored.last
        for i, t in enumerate(times):
            if previous is not None and t <= previous:
                after = "the stored window's last candle" if i == 0 else f"candle {i - 1}"
                kind, verb = ("duplicate_timestamp", "repeats") if t == previous else ("time_order", "is before")
                message = f"timestamp {t.isoformat()} {verb} {after} ({previous.isoformat()})"
                details.append(detail(("candles", i, "timestamp"), message, kind))
            previous = t
        for row, template, values in ohlc_violations(msg.rows):
            details.append(detail(("candles", row, _ohlc_field(template)), template.format(**values), "ohlc_range"))
        if details:
            raise ValidationFailed(f"invalid candles for {msg.symbol} on {msg.exchange}", details=details)
        rows = msg.rows if stored is None else np.concatenate((stored.rows, msg.rows))
        if len(rows) > WINDOW_LENGTH:
            rows = rows[-WINDOW_LENGTH:].copy()  # a copy, so the track does not keep the longer array alive
        return Update(key, Track(rows, times[-1]))

    def commit(self, update: Update) -> None:
        self._tracks[update.key] = update.track
