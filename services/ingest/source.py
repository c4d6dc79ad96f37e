"""Open a media source with PyAV: local files, HTTP(S) files, HLS (VOD or live), RTMP, RTSP, SRT.

``twitch.tv/<channel>`` URLs are resolved to their HLS playlist through the optional
``streamlink`` package. Every failure becomes an :class:`~.errors.IngestError` with a
typed code; nothing FFmpeg raises leaks out raw.

Safety: FFmpeg gets a ``protocol_whitelist`` per source kind (a file source opens files only; an
HTTP source http, https and what they stand on; ...), so a playlist or a redirect cannot switch
to another protocol. Before every connection a network source's host is checked against the
network policy (services/ingest/netguard.py), HTTP redirects are followed and checked here, and
FFmpeg is told to follow none itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlparse

import av

from .errors import ErrorCode, IngestError, classify
from .netguard import NetworkPolicy


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
# What FFmpeg may open for each kind of source (nested opens included: HLS segments, keys).
_HTTP = "http,https,tcp,tls"
PROTOCOLS = {
    SourceKind.FILE: "file",
    SourceKind.HTTP: _HTTP,
    SourceKind.HLS: _HTTP + ",crypto",
    SourceKind.RTMP: "rtmp,rtmps,tcp,tls",
    SourceKind.RTSP: "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
    SourceKind.SRT: "srt,udp",
    SourceKind.TWITCH: _HTTP + ",crypto",
}
_LOCAL_HLS = "file,crypto"
_TWITCH = re.compile(r"^(?:https?://)?(?:www\.|m\.)?twitch\.tv/([A-Za-z0-9_]{2,25})/?$", re.IGNORECASE)


@dataclass(frozen=True)
class SourceOptions:
    """Timeouts in seconds; ``open_timeout`` covers connecting and probing, ``read_timeout`` each read."""

    open_timeout: float = 15.0
    read_timeout: float = 10.0
    rtsp_transport: str = "tcp"
    twitch_quality: str = "best"
    network: NetworkPolicy = NetworkPolicy()  # the addresses a network source may reach


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
    try:
        parsed = urlparse(source)
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise IngestError(ErrorCode.INVALID_SOURCE, f"{source[:200]!r} is not a valid URL ({exc})") from None
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and source[1:3] in (":\\", ":/")):  # path or C:\ path
        path = Path(parsed.path if scheme == "file" else source).expanduser()
        if not path.exists():
            raise IngestError(ErrorCode.NOT_FOUND, f"no such file: {path}")
        if path.is_dir():
            raise IngestError(ErrorCode.INVALID_SOURCE, f"{path} is a directory, not a media file")
        kind = SourceKind.HLS if path.suffix.lower() == ".m3u8" else SourceKind.FILE
        return ResolvedSource(source, str(path), kind, {"protocol_whitelist": _LOCAL_HLS if kind is SourceKind.HLS else "file"}, False)
    if scheme in ("http", "https"):
        is_hls = parsed.path.lower().endswith((".m3u8", ".m3u"))
        kind = SourceKind.HLS if is_hls else SourceKind.HTTP
        opts = {"rw_timeout": rw_us, "protocol_whitelist": PROTOCOLS[kind], "max_redirects": "0"}
        if is_hls:
            # Start near the live edge, as a player would; ignored for VOD playlists.
            opts.update({"live_start_index": "-3", "http_persistent": "0"})
        return ResolvedSource(source, source, kind, opts, False)
    if scheme in ("rtmp", "rtmps"):
        return ResolvedSource(source, source, SourceKind.RTMP, {"rw_timeout": rw_us, "protocol_whitelist": PROTOCOLS[SourceKind.RTMP]}, True)
    if scheme in ("rtsp", "rtsps"):
        return ResolvedSource(source, source, SourceKind.RTSP, {
            "rtsp_transport": options.rtsp_transport, "timeout": rw_us, "protocol_whitelist": PROTOCOLS[SourceKind.RTSP]}, True)
    if scheme == "srt":
        return ResolvedSource(source, source, SourceKind.SRT, {"rw_timeout": rw_us, "protocol_whitelist": PROTOCOLS[SourceKind.SRT]}, True)
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
    return ResolvedSource(source, stream.url, SourceKind.TWITCH, {
        "rw_timeout": str(int(options.read_timeout * 1_000_000)), "live_start_index": "-3",
        "protocol_whitelist": PROTOCOLS[SourceKind.TWITCH], "max_redirects": "0"}, True)


def is_network(src: ResolvedSource) -> bool:
    return "://" in src.url and not src.url.lower().startswith("file:")


def check_network(src: ResolvedSource, options: SourceOptions = SourceOptions()) -> None:
    """Refuse a network source whose host the policy refuses (no request is made)."""
    if is_network(src):
        options.network.check_url(src.url, src.original)


def guard(src: ResolvedSource, options: SourceOptions = SourceOptions()) -> ResolvedSource:
    """The source to connect to now: its host checked, HTTP(S) redirects followed and checked."""
    if not is_network(src):
        return src
    if src.kind in (SourceKind.HTTP, SourceKind.HLS, SourceKind.TWITCH):
        final = options.network.follow_redirects(src.url, src.original, options.open_timeout)
        return ResolvedSource(src.original, final, src.kind, src.ffmpeg_options, src.live_hint)
    options.network.check_url(src.url, src.original)
    return src


def open_source(src: ResolvedSource, options: SourceOptions = SourceOptions()) -> av.container.InputContainer:
    """Open the container and check it has a stream we can decode; raises :class:`IngestError`."""
    src = guard(src, options)
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
