"""Pulling from a durable JetStream consumer in fetches bounded in messages AND bytes.

Why not nats-py's `fetch`: it can only bound a fetch in messages. 64 full-size 720p RGB
frames are 177 MB; the server writes them all into the client's socket buffer at once, and
when the client (busy classifying the previous batch on a loaded machine) reads slower than
that, the server passes its per-client pending limit (`max_pending`, 64 MiB by default),
says "Slow Consumer Detected" and cuts the connection. Every fetched, unacknowledged message
then comes back only after the ack wait, out of order, often after the stream's end.

So a fetch here is one JetStream pull request with `batch`, `max_bytes` and `expires`, and
every pull of one connection first reserves its `max_bytes` from the connection's
`ByteBudget`: the bytes the server may owe this client at any moment stay below what it
allows. A fetch ends when its batch is full or the server says the request is over
(404 no messages, 408 expired, 409 byte budget reached).

A pull is sized for what its consumer usually carries (a window record, a feature record).
When the next message alone is larger than that, the server answers 409 "Message Size
Exceeds MaxBytes" without sending it; the next pull is then widened once to `largest`, the
largest message the server accepts, so an unusually big message (even a forged one) is
fetched and handled instead of blocking its consumer for ever.

`ConsumerGone` is raised when the consumer or its stream no longer exists (NATS restarted
without them, or the server removed an inactive consumer): the caller re-creates them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.aio.client import Client
from nats.aio.msg import Msg

PROTOCOL_SLACK = 64 * 1024  # headers and protocol lines around a message's payload
PROBE_BYTES = 256 * 1024  # what a pull waiting for the next message asks for (see PullFetcher.fetch)


class ConsumerGone(Exception):
    """The durable consumer (or its stream) does not exist on the server."""


class ByteBudget:
    """Bytes that outstanding pull requests of one connection may bring in, all together.

    First come, first served: a pull that does not fit waits its turn, and no later pull
    overtakes it (else two busy consumers re-reserving in turn starve a third for ever).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.reserved = 0
        self._queue: deque[tuple[int, asyncio.Future]] = deque()

    @asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[None]:
        amount = min(amount, self.total)
        if self._queue or self.reserved + amount > self.total:
            turn = asyncio.get_running_loop().create_future()
            self._queue.append((amount, turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release(amount)  # granted just as we were cancelled
                else:
                    self._queue.remove((amount, turn))
                    self._grant()
                raise
        else:
            self.reserved += amount
        try:
            yield
        finally:
            self._release(amount)

    def _release(self, amount: int) -> None:
        self.reserved -= amount
        self._grant()

    def _grant(self) -> None:
        while self._queue and self.reserved + self._queue[0][0] <= self.total:
            amount, turn = self._queue.popleft()
            self.reserved += amount
            turn.set_result(None)


def _status(msg: Msg) -> str | None:
    """The status code of a JetStream control message, or None for a real message."""
    if msg.headers and "Status" in msg.headers and not msg.data:
        return msg.headers["Status"]
    return None


class PullFetcher:
    """Fetches from one durable consumer on one connection, one pull request at a time."""

    _ids = itertools.count()

    def __init__(self, nc: Client, stream: str, durable: str, budget: ByteBudget, largest: int) -> None:
        self.nc = nc
        self.largest = largest + PROTOCOL_SLACK
        self._widen = False  # the last pull found a message larger than its bytes
        self._too_big = False  # the last pull ended on a message larger than it asked for
        self.stream = stream
        self.durable = durable
        self.budget = budget
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = f"{nc.new_inbox()}.pull{next(self._ids)}"
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub = None
        self._idle = False  # the last fetch found nothing: the next one lingers at once

    async def _subscribed(self) -> None:
        if self._sub is None:
            async def put(msg: Msg) -> None:
                self._queue.put_nowait(msg)

            # The inbox only ever receives what our own bounded pulls asked for.
            self._sub = await self.nc.subscribe(self._inbox, cb=put, pending_msgs_limit=-1, pending_bytes_limit=-1)

    async def fetch(self, batch: int, max_bytes: int, expires_s: float) -> list[Msg]:
        """Up to `batch` messages and about `max_bytes` bytes; [] when none came in `expires_s`.

        What is there now is taken at once (a pull with no_wait). Only when nothing is there does
        a pull linger, and it is a small one (`PROBE_BYTES`): a consumer waiting for work holds
        little of the connection's budget. (Sixteen partitions' consumers each lingering with 3 MiB
        reserved left a busy one queueing behind idle ones for their whole expiry: one 720p frame a
        second.) A consumer whose last fetch found nothing lingers at once, without the no_wait
        pull: an idle partition's consumer sends one request a fetch, not two (the lingering pull
        returns as soon as a message comes all the same). A message too big for the probe ends its wait (409) like one that fits; either
        way what is there is then taken at once with the full `max_bytes`. A pull that lingered
        for a whole batch would hold a trickle of messages back for up to `expires_s` (the first
        version did: whole jobs ran 25 % slower).
        """
        await self._subscribed()
        if self._widen:
            max_bytes, self._widen = max(max_bytes, self.largest), False
        out: list[Msg] = self._leftovers(batch)
        if len(out) < batch and not (self._idle and not out):
            out += await self._take_now(batch - len(out), max_bytes)
        if out:
            self._idle = False
            return out
        probe = min(max_bytes, PROBE_BYTES)
        async with self.budget.reserve(probe):
            out = await self._pull({"batch": 1, "max_bytes": probe, "expires": int(expires_s * 1e9)}, 1, expires_s + 2.0, may_widen=False)
            rang = self._too_big
        rest = max_bytes - sum(len(m.data) for m in out)
        if (out or rang) and batch > len(out) and rest > 0:
            out += await self._take_now(batch - len(out), rest, may_widen=not out)
        self._idle = not out and not rang
        return out

    async def _take_now(self, batch: int, max_bytes: int, may_widen: bool = True) -> list[Msg]:
        """What is there now, without waiting, within `max_bytes` reserved from the budget."""
        async with self.budget.reserve(max_bytes):
            return await self._pull({"batch": batch, "max_bytes": max_bytes, "no_wait": True}, batch, 5.0, may_widen=may_widen)

    async def _pull(self, request: dict, batch: int, wait_s: float, may_widen: bool = True) -> list[Msg]:
        """One pull request: its messages until the batch is full or the server ends it."""
        await self.nc.publish(self._api, json.dumps(request).encode(), reply=self._inbox)
        deadline = time.monotonic() + wait_s  # the server's status normally ends it first
        out: list[Msg] = []
        self._too_big = False
        while len(out) < batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                msg = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            status = _status(msg)
            if status is None:
                out.append(msg)
                continue
            description = (msg.headers.get("Description") or "").lower()
            if status == "503" or "consumer deleted" in description or "consumer not found" in description:
                raise ConsumerGone(f"{self.stream}/{self.durable}: {status} {description or 'no responders'}")
            if status in ("404", "408", "409"):  # no messages, expired, byte budget reached: the pull is over
                self._too_big = status == "409" and not out and "maxbytes" in description.replace(" ", "")
                self._widen = may_widen and self._too_big
                break
            # 100 (heartbeat) and anything else: keep waiting
        return out

    def _leftovers(self, batch: int) -> list[Msg]:
        """Messages that arrived after an earlier fetch gave up waiting: still delivered, still ours."""
        out = []
        while len(out) < batch and not self._queue.empty():
            msg = self._queue.get_nowait()
            if _status(msg) is None:
                out.append(msg)
        return out

    async def close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection is already closed
                pass
            self._sub = None
