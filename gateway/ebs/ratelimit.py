"""A token bucket per viewer (Twitch's `opaque_user_id`), in bounded memory.

Each viewer may make `burst` requests at once and `rate_per_s` a second after that. The table
keeps at most `max_viewers` buckets: a bucket that has refilled completely says nothing a new
one would not, so those go first; when every bucket is still in use the oldest is dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_viewers: int = 100_000, clock=time.monotonic):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_viewers, self.clock = rate_per_s, float(burst), max_viewers, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str) -> tuple[bool, float]:
        """(allowed, seconds until the next request would be): takes a token when allowed."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_viewers:
            self._shrink(now)
        return allowed, 0.0 if allowed else (1.0 - tokens) / self.rate

    def _shrink(self, now: float) -> None:
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > self.max_viewers:
            self._buckets.popitem(last=False)
