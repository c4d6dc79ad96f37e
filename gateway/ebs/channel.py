"""A Twitch channel's live view, as the extension draws it.

Which stream serves a channel: the streams labelled `twitch.channel_id=<id>`; the newest one
still running wins, and when none runs the newest finished one (viewers keep the last
broadcast's chart until the next starts). Clip URLs are signed (HMAC of stream, clip and expiry
with the extension secret) so that a `<video src>`, which cannot send the viewer's JWT, can
play them without the gateway's own token.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from google.protobuf.json_format import MessageToDict

from gateway.registry import TERMINAL
from streamsight.gen.gateway.v1 import gateway_pb2

CHANNEL_LABEL = "twitch.channel_id"
LATEST_HIGHLIGHTS = 5
CLIP_URL_TTL_S = 3600


def _json(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def channel_stream(streams: list[gateway_pb2.Stream], channel_id: str) -> gateway_pb2.Stream | None:
    """The stream serving `channel_id` among `streams` (oldest first, as the registry lists them)."""
    labelled = [s for s in streams if s.labels.get(CHANNEL_LABEL) == channel_id]
    running = [s for s in labelled if s.state not in TERMINAL]
    return (running or labelled or [None])[-1]


def clip_signature(key: bytes, stream_id: str, clip_id: str, expires: int) -> str:
    message = b"\0".join((b"streamsight-clip-v1", stream_id.encode(), clip_id.encode(), str(expires).encode()))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def clip_allowed(key: bytes, stream_id: str, clip_id: str, expires: str, signature: str, now: float | None = None) -> bool:
    if not expires.isdigit() or int(expires) <= (time.time() if now is None else now):
        return False
    return hmac.compare_digest(clip_signature(key, stream_id, clip_id, int(expires)), signature)


async def channel_view(api, key: bytes, channel_id: str, base_url: str) -> dict | None:
    """The JSON the extension draws, or None when no stream serves the channel."""
    stream = channel_stream(await api.registry.list(), channel_id)
    if stream is None:
        return None
    sentiment = await api.GetSentiment(gateway_pb2.GetSentimentRequest(stream_id=stream.id), None)
    highlights = (await api.ListHighlights(gateway_pb2.ListHighlightsRequest(stream_id=stream.id), None)).highlights
    latest = sorted(highlights, key=lambda h: h.end_s, reverse=True)[:LATEST_HIGHLIGHTS]
    expires = int(time.time()) + CLIP_URL_TTL_S
    shown = []
    for highlight in latest:
        doc = _json(highlight)
        doc.pop("why", None)  # the model's feature contributions are not the viewer's business
        for clip, name in ((highlight.clip, "clip_url"), (highlight.vertical_clip, "vertical_clip_url")):
            if clip.clip_id:
                sig = clip_signature(key, stream.id, clip.clip_id, expires)
                doc[name] = f"{base_url}/ebs/v1/clips/{stream.id}/{clip.clip_id}.mp4?expires={expires}&sig={sig}"
        shown.append(doc)
    return {
        "channel_id": channel_id,
        "stream": {
            "id": stream.id,
            "state": _json(stream).get("state", "STREAM_STATE_UNSPECIFIED"),
            "media_time_s": stream.media_time_s,
            "duration_s": stream.duration_s,
        },
        "sentiment": _json(sentiment),
        "highlights": shown,
    }
