"""Serving a clip over HTTP as ingest streams it (never whole in memory), with Range support."""

from __future__ import annotations

from aiohttp import web

from gateway.http.ranges import byte_range, is_single_range
from streamsight.gen.gateway.v1 import gateway_pb2


async def send_clip(request: web.Request, api, stream_id: str, clip_id: str) -> web.StreamResponse:
    clip_id = clip_id.rsplit(".", 1)[0]
    chunks = api.GetClip(gateway_pb2.GetClipRequest(stream_id=stream_id, clip_id=clip_id), None)
    try:
        first = await anext(chunks, None)  # a StatusError (unknown stream or clip) goes out as JSON
        total = first.total_size if first is not None else 0
        content_type = first.content_type if first is not None else "video/mp4"
        header = request.headers.get("Range", "")
        wanted = byte_range(header, total)
        if wanted is None:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
        start, end = wanted  # inclusive; (0, total - 1) without a Range header
        ranged = is_single_range(header)
        response = web.StreamResponse(status=206 if ranged else 200)
        response.content_type = content_type
        response.content_length = max(0, end - start + 1)
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["Cache-Control"] = "private, max-age=3600"
        if ranged:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        chunk, offset = first, 0
        while chunk is not None and offset <= end:
            data = chunk.data
            lo, hi = max(start - offset, 0), min(end + 1 - offset, len(data))
            if lo < hi:
                await response.write(data[lo:hi])
            offset += len(data)
            chunk = await anext(chunks, None) if offset <= end else None
        await response.write_eof()
        return response
    finally:
        await chunks.aclose()
