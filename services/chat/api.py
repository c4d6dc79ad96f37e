"""The Chat control API (streamsight.chat.v1.Chat): checks requests, hands them to the service.

Any chat replica takes any call (service.py): StartChat records the reader for the replica
holding the stream's partition, StopChat asks that replica to stop it, GetChat answers from
the readers' bucket.

Status codes: INVALID_ARGUMENT for a bad stream id, pacing or source (a replay file that is
missing, unreadable or not a chat log: the message names the file and the line);
FAILED_PRECONDITION for a second StartChat of a running stream; NOT_FOUND for StopChat or
GetChat of a stream no replica knows; RESOURCE_EXHAUSTED when the replica taking the call holds
the stream's partition and reads `max_streams` streams already (a holder that is full when it
picks a reader up marks it FAILED, saying so in `last_error`); UNAVAILABLE when NATS did not
take the change.
"""

from __future__ import annotations

from datetime import timezone
from typing import TYPE_CHECKING

from streamsight import subjects
from streamsight.gen.chat.v1 import chat_pb2, chat_pb2_grpc
from streamsight.gen.common.v1 import common_pb2
from streamsight.rpc import invalid

if TYPE_CHECKING:
    from services.chat.service import ChatService


def _stream_id(value: str) -> str:
    if not subjects.is_valid_stream_id(value):
        raise invalid(f"stream id {value!r} is not valid: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit")
    return value


class ChatApi(chat_pb2_grpc.ChatServicer):
    def __init__(self, service: ChatService) -> None:
        self.service = service

    async def StartChat(self, request: chat_pb2.StartChatRequest, context) -> chat_pb2.ChatStatus:
        stream_id = _stream_id(request.stream_id)
        if request.pacing not in common_pb2.Pacing.values():
            raise invalid(f"unknown pacing {request.pacing}; use PACING_VOD or PACING_LIVE")
        media_start = None
        if request.HasField("media_start"):
            media_start = request.media_start.ToDatetime(tzinfo=timezone.utc).timestamp()
            if media_start <= 0:
                raise invalid("media_start must be a time after 1970 (or left unset: the stream starts now)")
        return await self.service.request_chat(stream_id, request.source, media_start, request.pacing)

    async def StopChat(self, request: chat_pb2.StopChatRequest, context) -> chat_pb2.ChatStatus:
        return await self.service.stop_chat(_stream_id(request.stream_id))

    async def GetChat(self, request: chat_pb2.GetChatRequest, context) -> chat_pb2.ChatStatus:
        return self.service.get_chat(_stream_id(request.stream_id))
