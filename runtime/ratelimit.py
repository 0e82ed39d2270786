"""Per-API-key rate limiting: one token bucket per key, refilled continuously.

A small bucket rather than the `limits` library: the check runs on every authenticated request, and a bucket is
two floats and a clock read per call (`bench/ratelimit.py` measures both side by side). Buckets live in one
process: with ``--workers N`` each worker keeps its own, so a key may reach N x the rate in total.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    """`rate` requests per second per key, with bursts of up to `burst` requests."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate ({rate}) must be > 0 and burst ({burst}) >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[int, list[float]] = {}  # key -> [tokens, time of the last refill]

    def acquire(self, key: int) -> float:
        """Take one token for `key`: 0.0 when the request may go on, else the seconds until a token is free."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait."""
    return str(max(1, math.ceil(wait_s)))
