"""The stream registry: one JetStream KV entry per stream (protobuf `Stream`), updated with CAS.

Terminal states (ENDED, STOPPED, FAILED) are sticky: a late status from a service never brings a
finished stream back to RUNNING.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.gateway.v1 import gateway_pb2

TERMINAL = {common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_STOPPED, common_pb2.STREAM_STATE_FAILED}


class StreamExists(Exception):
    pass


class StreamMissing(Exception):
    pass


class Registry:
    def __init__(self, kv: KeyValue):
        self.kv = kv

    async def create(self, stream: gateway_pb2.Stream) -> None:
        try:
            await self.kv.create(stream.id, stream.SerializeToString())
        except KeyWrongLastSequenceError:
            raise StreamExists(stream.id) from None

    async def get(self, stream_id: str) -> gateway_pb2.Stream:
        try:
            entry = await self.kv.get(stream_id)
        except KeyNotFoundError:
            raise StreamMissing(stream_id) from None
        return gateway_pb2.Stream.FromString(entry.value)

    async def list(self) -> list[gateway_pb2.Stream]:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        streams = []
        for key in keys:
            try:
                streams.append(await self.get(key))
            except StreamMissing:
                continue
        return sorted(streams, key=lambda s: (s.created_at.seconds, s.created_at.nanos, s.id))

    async def update(self, stream_id: str, change: Callable[[gateway_pb2.Stream], None], attempts: int = 10) -> gateway_pb2.Stream:
        """Apply `change` to the stored stream atomically (retries on concurrent writes)."""
        for _ in range(attempts):
            try:
                entry = await self.kv.get(stream_id)
            except KeyNotFoundError:
                raise StreamMissing(stream_id) from None
            stream = gateway_pb2.Stream.FromString(entry.value)
            change(stream)
            try:
                await self.kv.update(stream_id, stream.SerializeToString(), last=entry.revision)
                return stream
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"registry entry {stream_id} kept changing; gave up after {attempts} attempts")


def apply_state(stream: gateway_pb2.Stream, state: int, error: str = "") -> None:
    """Move `stream` to `state` unless it already finished; stamp start/end times."""
    if stream.state in TERMINAL:
        return
    stream.state = state
    if error:
        stream.last_error = error
    if state == common_pb2.STREAM_STATE_RUNNING and not stream.HasField("started_at"):
        stream.started_at.GetCurrentTime()
    if state in TERMINAL:
        stream.ended_at.GetCurrentTime()
