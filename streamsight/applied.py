"""Where a stream's saved state stands in MEDIA: the last message applied to it.

A partitioned stage saves each stream's state with this position and acknowledges a fetch only
after; the replica that takes the stream over acknowledges, without applying it, a redelivered
message the state already holds. The stream sequence alone cannot say so: MEDIA is a memory
stream, and after a NATS restart it numbers from 1 again, so a new message would look old.
Its stored time can: a message is covered only if it is at or below the position in both.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.msg import Msg


@dataclass(frozen=True)
class Applied:
    seq: int = 0  # MEDIA stream sequence
    stored_ns: int = 0  # when the server stored it, nanoseconds since the epoch

    @classmethod
    def of(cls, msg: Msg) -> "Applied":
        meta = msg.metadata
        if meta is None or meta.sequence is None:
            return cls()
        return cls(int(meta.sequence.stream), int(meta.timestamp.timestamp() * 1e9) if meta.timestamp else 0)

    def covers(self, other: "Applied") -> bool:
        """Whether the message at `other` is in a state saved at this position."""
        return other.seq <= self.seq and other.stored_ns <= self.stored_ns
