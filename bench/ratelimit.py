"""Cost of the per-key rate-limit check on the hot path: the service's token bucket against the `limits` library.

Both are asked the same question the service asks per request (may key k go on?) for 4 keys in turn, with a
limit high enough that every call is allowed (the common case on a healthy server). Reported: ns per check
(median of 7 rounds) and the ratio. Run: ``python -m bench.ratelimit`` (needs ``pip install limits``, in the
``dev`` extra).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from runtime.ratelimit import RateLimiter

CALLS = 200_000
KEYS = 4


def _ns_per_call(check: Callable[[int], object]) -> float:
    rounds = []
    for _ in range(7):
        start = time.perf_counter_ns()
        for i in range(CALLS):
            check(i % KEYS)
        rounds.append((time.perf_counter_ns() - start) / CALLS)
    return statistics.median(rounds)


def main() -> None:
    bucket = RateLimiter(rate=1e9, burst=1_000_000)
    ours = _ns_per_call(bucket.acquire)
    print(f"token bucket (runtime.ratelimit): {ours:8.0f} ns per check")
    try:
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
    except ImportError:
        print("limits is not installed, run `pip install limits` to compare")
        return
    item = RateLimitItemPerSecond(1_000_000_000)
    names = [f"key-{k}" for k in range(KEYS)]
    for strategy in (FixedWindowRateLimiter, SlidingWindowCounterRateLimiter, MovingWindowRateLimiter):
        limiter = strategy(MemoryStorage())
        if strategy is MovingWindowRateLimiter:
            item = RateLimitItemPerSecond(100_000_000)  # moving window keeps one entry per hit: bound the memory

        def hit(k: int, limiter: object = limiter, item: object = item) -> object:
            return limiter.hit(item, names[k])  # type: ignore[attr-defined]

        cost = _ns_per_call(hit) if strategy is not MovingWindowRateLimiter else _ns_per_call_short(hit)
        print(f"limits {strategy.__name__:34s} {cost:8.0f} ns per check  ({cost / ours:.1f}x the bucket)")


def _ns_per_call_short(check: Callable[[int], object]) -> float:
    start = time.perf_counter_ns()
    for i in range(20_000):
        check(i % KEYS)
    return (time.perf_counter_ns() - start) / 20_000


if __name__ == "__main__":
    main()
