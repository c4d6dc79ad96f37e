"""Every chat reader of the stack, as the resume bucket holds them, mirrored in this replica's memory.

`ReaderTable` watches the bucket (services/chat/resume.py: one `ReaderPoint` per stream id) and
keeps each key's latest point and revision, so a replica knows, without a NATS round trip, which
readers exist, which were asked to stop and what their status is (GetChat from any replica).
Every change another process makes is handed to `on_change(stream_id)`; the service decides
whether it concerns a partition it holds.

Writes go through here: `create` (a StartChat; refused while the stream's reader is not
finished), `update` (compare-and-set at the revision last seen: a conflict reads the key again
and applies the change to what is there now, so a stop request and a progress save never undo
each other) and `delete`. A write is applied to the mirror at once, and the watch's copy of it,
arriving later, is recognised by its revision and not handed on as a change. An entry that is
not a point is deleted, logged and counted. A watch whose consumer NATS dropped (a restarted or
lost node) is started again, after a reconnect and every WATCH_CHECK_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.chat.resume import ReaderPoint
from streamsight.bus import kv_left_out
from streamsight.tasks import cancel_and_wait
from streamsight.telemetry import MESSAGES_FAILED

log = structlog.get_logger(__name__)

WATCH_CHECK_S = 5.0  # how often the watch's consumer is checked (a restarted or lost NATS node drops it)
UPDATE_TRIES = 8  # compare-and-set attempts before a write gives up (each conflict is another writer's success)
LOAD_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Entry:
    point: ReaderPoint
    revision: int


class ReaderExists(Exception):
    """StartChat of a stream whose reader is not finished."""

    def __init__(self, entry: Entry) -> None:
        super().__init__("a chat reader for this stream is running")
        self.entry = entry


class ReaderTable:
    """The bucket mirrored (see the module docstring)."""

    def __init__(self, bus, bucket: str, on_change: Callable[[str], None]) -> None:
        self.bus, self.bucket, self.on_change = bus, bucket, on_change
        self.kv: KeyValue | None = None
        self._entries: dict[str, Entry] = {}
        self._seen: dict[str, int] = {}  # key -> latest revision applied (deletes included)
        self._task: asyncio.Task | None = None
        self._guard_task: asyncio.Task | None = None
        self._check_lock = asyncio.Lock()
        self._watcher = None

    def get(self, stream_id: str) -> Entry | None:
        return self._entries.get(stream_id)

    def ids(self) -> list[str]:
        return list(self._entries)

    async def start(self) -> None:
        """Open the bucket, read every key's latest point, then follow changes in the background."""
        self.kv = await self.bus.kv(self.bucket, history=1)
        info = await self.bus.js.stream_info(f"KV_{self.bucket}", subjects_filter=f"$KV.{self.bucket}.>")
        self._watcher = await self.kv.watch(">", inactive_threshold=60.0)
        if info.state.subjects:  # read until the entry the server had last (see streamsight.bus.kv_entries)
            while True:
                try:
                    entry = await self._watcher.updates(timeout=LOAD_TIMEOUT_S)
                except (asyncio.TimeoutError, nats.errors.TimeoutError):
                    log.warning("chat readers' bucket read ended by its timeout", bucket=self.bucket, entries=len(self._entries))
                    break
                if entry is None:
                    continue
                await self._apply_watched(entry, notify=False)
                if entry.delta == 0:
                    break
            for entry in await kv_left_out(self.kv, self.bucket, info.state.subjects, self._seen):
                await self._apply_watched(entry, notify=False)
        self._task = asyncio.create_task(self._follow(), name="chat:readers")
        self._guard_task = asyncio.create_task(self._guard(), name="chat:readers-guard")
        self.bus.on_reconnect.append(self.check)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.bus.on_reconnect.remove(self.check)
        await cancel_and_wait([self._guard_task, self._task])
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()

    async def _guard(self) -> None:
        while True:
            await asyncio.sleep(WATCH_CHECK_S)
            await self.check()

    async def check(self) -> None:
        """Watch again if the watch's consumer is gone: the ordered consumer under it is ephemeral,
        and a restarted nats-server (or a lost cluster node) does not keep it, while nats-py goes on
        waiting for updates that never come. The new watch delivers every key's latest entry;
        those newer than the mirror are handed on as changes."""
        async with self._check_lock:  # the reconnect's check and the periodic one never both start a watch
            await self._check()

    async def _check(self) -> None:
        try:
            await self._watcher._sub.consumer_info()
            return
        except nats.js.errors.NotFoundError:
            pass
        except Exception as exc:  # NATS away: the next check, or the reconnect's, tries again
            log.debug("chat readers' watch not checked", error=repr(exc))
            return
        log.warning("chat readers' watch lost its consumer; watching again", bucket=self.bucket)
        await cancel_and_wait([self._task])
        with contextlib.suppress(Exception):
            await self._watcher.stop()
        try:
            self._watcher = await self.kv.watch(">", inactive_threshold=60.0)
        except Exception as exc:
            log.warning("chat readers' watch not started again; will retry", error=repr(exc))
            return
        self._task = asyncio.create_task(self._follow(), name="chat:readers")

    async def _follow(self) -> None:
        while True:
            try:
                entry = await self._watcher.updates(timeout=3600)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                continue
            if entry is not None:
                try:
                    await self._apply_watched(entry, notify=True)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one bad entry must not end the watch
                    log.error("chat reader change not applied", key=entry.key, error=repr(exc))

    async def _apply_watched(self, entry: KeyValue.Entry, notify: bool) -> None:
        if entry.revision <= self._seen.get(entry.key, 0):
            return  # this replica's own write, already applied, or an older one
        self._seen[entry.key] = entry.revision
        if entry.operation is not None or not entry.value:  # deleted or purged
            self._entries.pop(entry.key, None)
        else:
            try:
                self._entries[entry.key] = Entry(ReaderPoint.from_bytes(entry.value), entry.revision)
            except (ValueError, KeyError, TypeError) as exc:
                MESSAGES_FAILED.labels("chat", "resume_bad_entry").inc()
                log.error("unreadable chat reader point dropped", stream_id=entry.key, error=repr(exc))
                self._entries.pop(entry.key, None)
                with contextlib.suppress(Exception):
                    await self.kv.delete(entry.key, last=entry.revision)
                return
        if notify:
            self.on_change(entry.key)

    def _applied(self, stream_id: str, point: ReaderPoint | None, revision: int) -> Entry | None:
        if revision > self._seen.get(stream_id, 0):
            self._seen[stream_id] = revision
            if point is None:
                self._entries.pop(stream_id, None)
            else:
                self._entries[stream_id] = Entry(point, revision)
        return self._entries.get(stream_id)

    async def _fetch(self, stream_id: str) -> Entry | None:
        """The key as the server holds it now (after a conflict: the mirror is behind)."""
        try:
            entry = await self.kv.get(stream_id)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        found = self._applied(stream_id, ReaderPoint.from_bytes(entry.value) if entry.value else None, entry.revision)
        self.on_change(stream_id)
        return found

    async def create(self, stream_id: str, point: ReaderPoint) -> Entry:
        """Record a new reader; ReaderExists while the stream's reader is not finished."""
        for _ in range(UPDATE_TRIES):
            try:
                revision = await self.kv.create(stream_id, point.to_bytes())
                return self._applied(stream_id, point, revision) or Entry(point, revision)
            except KeyWrongLastSequenceError:
                pass
            current = await self._fetch(stream_id)
            if current is None:
                continue  # deleted meanwhile: create again
            if not current.point.finished:
                raise ReaderExists(current)
            try:  # a finished reader's point: the new one takes its place
                revision = await self.kv.update(stream_id, point.to_bytes(), last=current.revision)
                return self._applied(stream_id, point, revision) or Entry(point, revision)
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"chat reader {stream_id}: the point kept changing under {UPDATE_TRIES} tries")

    async def update(self, stream_id: str, change: Callable[[ReaderPoint], ReaderPoint | None]) -> Entry | None:
        """Apply `change` to the stream's latest point and write it at that point's revision,
        again on a conflict. `change` returns None for "nothing to write". None when the
        stream has no point (deleted)."""
        current = self._entries.get(stream_id) or await self._fetch(stream_id)
        for _ in range(UPDATE_TRIES):
            if current is None:
                return None
            new = change(copy.copy(current.point))
            if new is None:
                return current
            try:
                revision = await self.kv.update(stream_id, new.to_bytes(), last=current.revision)
            except KeyWrongLastSequenceError:
                current = await self._fetch(stream_id)
                continue
            return self._applied(stream_id, new, revision)
        raise RuntimeError(f"chat reader {stream_id}: the point kept changing under {UPDATE_TRIES} tries")

    async def delete(self, stream_id: str, revision: int) -> None:
        """Delete the point if it is still at `revision` (else someone wrote it since: it stays)."""
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.delete(stream_id, last=revision)
            self._applied(stream_id, None, revision + 1)  # the delete marker's revision is at least this
