"""HTTP byte ranges for clips (RFC 9110 §14): one range is served, anything else gets the whole."""

from __future__ import annotations

import re

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def is_single_range(header: str) -> bool:
    match = _RANGE.match(header or "")
    return bool(match and any(match.groups()))


def byte_range(header: str, total: int) -> tuple[int, int] | None:
    """The inclusive byte range a Range header asks of `total` bytes; the whole when there is none
    (or one this server ignores, as HTTP allows: several ranges, other units, malformed); None
    when it cannot be satisfied (416)."""
    match = _RANGE.match(header or "")
    if not match or not any(match.groups()):
        return 0, total - 1
    first, last = match.groups()
    if not first:  # the last N bytes
        n = int(last)
        return (max(total - n, 0), total - 1) if n > 0 and total else None
    start = int(first)
    end = min(int(last), total - 1) if last else total - 1
    if start >= total or end < start:
        return None
    return start, end
