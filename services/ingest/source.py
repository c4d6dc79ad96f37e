"""Open a media source with PyAV: local files, HTTP(S) files, HLS (VOD or live), RTMP, RTSP, SRT.

``twitch.tv/<channel>`` URLs are resolved to their HLS playlist through the optional
``streamlink`` package. Every failure becomes an :class:`~.errors.IngestError` with a
typed code; nothing FFmpeg raises leaks out raw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlparse

import av

from .errors import ErrorCode, IngestError, classify


class SourceKind(str, Enum):
    FILE = "file"
    HTTP = "http"  # a plain file over HTTP(S)
    HLS = "hls"  # an m3u8 playlist, VOD or live
    RTMP = "rtmp"
    RTSP = "rtsp"
    SRT = "srt"
    TWITCH = "twitch"


# Sources that are live by nature (HLS is live only while its playlist has no end).
_LIVE_KINDS = {SourceKind.RTMP, SourceKind.RTSP, SourceKind.SRT, SourceKind.TWITCH}
_TWITCH = re.compile(r"^(?:https?://)?(?:www\.|m\.)?twitch\.tv/([A-Za-z0-9_]{2,25})/?$", re.IGNORECASE)


@dataclass(frozen=True)
class SourceOptions:
    """Timeouts in seconds; ``open_timeout`` covers connecting and probing, ``read_timeout`` each read."""

    open_timeout: float = 15.0
    read_timeout: float = 10.0
    rtsp_transport: str = "tcp"
    twitch_quality: str = "best"


@dataclass(frozen=True)
class ResolvedSource:
    """What to hand to FFmpeg for a source string given by a user."""

    original: str
    url: str
    kind: SourceKind
    ffmpeg_options: dict[str, str]
    live_hint: bool


def resolve(source: str, options: SourceOptions = SourceOptions()) -> ResolvedSource:
    """Check a source string and work out how to open it (no network access except for Twitch)."""
    source = source.strip()
    if not source:
        raise IngestError(ErrorCode.INVALID_SOURCE, "the source is empty; give a file path or a URL")
    if _TWITCH.match(source):
        return _resolve_twitch(source, options)
    rw_us = str(int(options.read_timeout * 1_000_000))
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and source[1:3] in (":\\", ":/")):  # path or C:\ path
        path = Path(parsed.path if scheme == "file" else source).expanduser()
        if not path.exists():
            raise IngestError(ErrorCode.NOT_FOUND, f"no such file: {path}")
        if path.is_dir():
            raise IngestError(ErrorCode.INVALID_SOURCE, f"{path} is a directory, not a media file")
        kind = SourceKind.HLS if path.suffix.lower() == ".m3u8" else SourceKind.FILE
        return ResolvedSource(source, str(path), kind, {}, False)
    if scheme in ("http", "https"):
        is_hls = parsed.path.lower().endswith((".m3u8", ".m3u"))
        opts = {"rw_timeout": rw_us}
        if is_hls:
            # Start near the live edge, as a player would; ignored for VOD playlists.
            opts.update({"live_start_index": "-3", "http_persistent": "0"})
        return ResolvedSource(source, source, SourceKind.HLS if is_hls else SourceKind.HTTP, opts, False)
    if scheme in ("rtmp", "rtmps"):
        return ResolvedSource(source, source, SourceKind.RTMP, {"rw_timeout": rw_us}, True)
    if scheme in ("rtsp", "rtsps"):
        return ResolvedSource(source, source, SourceKind.RTSP,
                              {"rtsp_transport": options.rtsp_transport, "timeout": rw_us}, True)
    if scheme == "srt":
        return ResolvedSource(source, source, SourceKind.SRT, {"rw_timeout": rw_us}, True)
    raise IngestError(ErrorCode.INVALID_SOURCE,
                      f"unsupported source {source!r}: use a file path or an http(s), rtmp, rtsp, srt or twitch.tv URL")


def _resolve_twitch(source: str, options: SourceOptions) -> ResolvedSource:
    try:
        import streamlink  # optional dependency: the [live] extra
    except ImportError as exc:
        raise IngestError(ErrorCode.DEPENDENCY_MISSING,
                          "twitch.tv URLs need the optional 'streamlink' package (pip install streamlink)") from exc
    url = source if "://" in source else f"https://{source}"
    try:
        streams = streamlink.Streamlink().streams(url)
    except Exception as exc:  # streamlink raises its own PluginError/NoPluginError family
        raise IngestError(ErrorCode.UNREACHABLE, f"could not resolve {source} with streamlink: {exc}") from exc
    stream = streams.get(options.twitch_quality) or streams.get("best")
    if stream is None or not hasattr(stream, "url"):
        raise IngestError(ErrorCode.NOT_FOUND, f"{source} is offline or has no playable HLS stream")
    return ResolvedSource(source, stream.url, SourceKind.TWITCH,
                          {"rw_timeout": str(int(options.read_timeout * 1_000_000)), "live_start_index": "-3"}, True)


def open_source(src: ResolvedSource, options: SourceOptions = SourceOptions()) -> av.container.InputContainer:
    """Open the container and check it has a stream we can decode; raises :class:`IngestError`."""
    head: bytes | None = None
    if src.kind in (SourceKind.FILE,):
        try:
            with open(src.url, "rb") as fh:
                head = fh.read(512)
        except OSError as exc:
            raise classify(exc, src.original) from exc
        if not head:
            raise IngestError(ErrorCode.NOT_MEDIA, f"{src.original} is empty")
    try:
        container = av.open(src.url, mode="r", options=dict(src.ffmpeg_options),
                            timeout=(options.open_timeout, options.read_timeout))
    except Exception as exc:
        raise classify(exc, src.original, local_head=head) from exc
    try:
        check_streams(container, src.original)
    except IngestError:
        container.close()
        raise
    return container


def check_streams(container: av.container.InputContainer, name: str) -> None:
    """Fail with a clear code when nothing in the container can be decoded."""
    video, audio = container.streams.video, container.streams.audio
    if not video and not audio:
        raise IngestError(ErrorCode.NO_STREAMS, f"{name} has no video or audio stream")
    decodable = [s for s in (*video, *audio) if _has_decoder(s)]
    if not decodable:
        names = ", ".join(sorted({_codec_name(s) for s in (*video, *audio)}))
        raise IngestError(ErrorCode.UNSUPPORTED_CODEC, f"{name} uses a codec this FFmpeg cannot decode ({names})")


def _has_decoder(stream: av.stream.Stream) -> bool:
    try:
        ctx = stream.codec_context
        return ctx is not None and ctx.codec is not None and ctx.codec.is_decoder
    except Exception:
        return False


def _codec_name(stream: av.stream.Stream) -> str:
    try:
        return stream.codec_context.name
    except Exception:
        return "unknown"


def is_live(src: ResolvedSource, container: av.container.InputContainer) -> bool:
    """Live when the protocol is live or an HLS playlist has no end (no known duration)."""
    if src.live_hint:
        return True
    return src.kind is SourceKind.HLS and not container.duration
