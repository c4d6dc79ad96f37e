"""Typed ingest errors: a code a program can switch on and a message a person understands.

Every failure to open or read a source becomes an :class:`IngestError`. The code's
``grpc_status`` names the gRPC status the service should answer with (the service
maps the name; this module does not import gRPC).
"""

from __future__ import annotations

import errno
import socket
from enum import Enum

import av


class ErrorCode(str, Enum):
    """Why a source could not be ingested."""

    INVALID_SOURCE = "INVALID_SOURCE"  # the source string is not a path or URL we can use
    REFUSED_SOURCE = "REFUSED_SOURCE"  # the source would reach an address the network policy refuses (netguard)
    NOT_FOUND = "NOT_FOUND"  # no such file, or the server answered 404
    FORBIDDEN = "FORBIDDEN"  # the server refused (401/403)
    UNREACHABLE = "UNREACHABLE"  # connection refused, host unknown, network down
    TIMEOUT = "TIMEOUT"  # no data within the configured timeout
    NOT_MEDIA = "NOT_MEDIA"  # readable, but not audio or video FFmpeg understands
    TRUNCATED = "TRUNCATED"  # a media file that ends early (cut-off download or copy)
    UNSUPPORTED_CODEC = "UNSUPPORTED_CODEC"  # media, but no decoder for its codec
    NO_STREAMS = "NO_STREAMS"  # media without any video or audio stream
    DEPENDENCY_MISSING = "DEPENDENCY_MISSING"  # an optional package (streamlink), or an FFmpeg protocol (srt), is needed
    STREAM_LOST = "STREAM_LOST"  # a live source dropped and did not come back
    CLIP_OUT_OF_RANGE = "CLIP_OUT_OF_RANGE"  # the clip is not (or no longer) in the clip buffer
    INTERNAL = "INTERNAL"  # a bug on our side

    @property
    def grpc_status(self) -> str:
        """Name of the gRPC status code a service should answer with."""
        return _GRPC_STATUS[self]


_GRPC_STATUS = {
    ErrorCode.INVALID_SOURCE: "INVALID_ARGUMENT",
    ErrorCode.REFUSED_SOURCE: "INVALID_ARGUMENT",
    ErrorCode.NOT_FOUND: "NOT_FOUND",
    ErrorCode.FORBIDDEN: "PERMISSION_DENIED",
    ErrorCode.UNREACHABLE: "UNAVAILABLE",
    ErrorCode.TIMEOUT: "DEADLINE_EXCEEDED",
    ErrorCode.NOT_MEDIA: "INVALID_ARGUMENT",
    ErrorCode.TRUNCATED: "INVALID_ARGUMENT",
    ErrorCode.UNSUPPORTED_CODEC: "INVALID_ARGUMENT",
    ErrorCode.NO_STREAMS: "INVALID_ARGUMENT",
    ErrorCode.DEPENDENCY_MISSING: "FAILED_PRECONDITION",
    ErrorCode.STREAM_LOST: "UNAVAILABLE",
    ErrorCode.CLIP_OUT_OF_RANGE: "OUT_OF_RANGE",
    ErrorCode.INTERNAL: "INTERNAL",
}

# Codes worth retrying on a live source (the network may come back).
TRANSIENT = frozenset({ErrorCode.UNREACHABLE, ErrorCode.TIMEOUT, ErrorCode.STREAM_LOST})


class IngestError(Exception):
    """An ingest failure with a typed :class:`ErrorCode` and a human message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message

    @property
    def transient(self) -> bool:
        """True when retrying might help (network trouble rather than bad input)."""
        return self.code in TRANSIENT


def _looks_like_media(head: bytes) -> bool:
    """True when the first bytes carry the signature of a container we know."""
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")  # MP4 / MOV
        or head.startswith(b"\x1a\x45\xdf\xa3")  # Matroska / WebM (EBML)
        or head.startswith(b"FLV")
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47)  # MPEG-TS sync bytes
        or head.startswith(b"OggS")
        or head.startswith(b"ID3")
    )


def classify(exc: BaseException, source: str, *, local_head: bytes | None = None) -> IngestError:
    """Turn an exception from opening or reading ``source`` into an :class:`IngestError`.

    ``local_head`` is the first bytes of a local file, used to tell a truncated
    media file (known signature, unreadable) from a file that is not media at all.
    """
    if isinstance(exc, IngestError):
        return exc
    if isinstance(exc, av.error.HTTPNotFoundError):
        return IngestError(ErrorCode.NOT_FOUND, f"the server answered 404 Not Found for {source}")
    if isinstance(exc, (av.error.HTTPForbiddenError, av.error.HTTPUnauthorizedError)):
        return IngestError(ErrorCode.FORBIDDEN, f"the server refused access to {source} ({exc.strerror})")
    if isinstance(exc, (av.error.HTTPServerError, av.error.HTTPError)):
        return IngestError(ErrorCode.UNREACHABLE, f"the server failed to serve {source} ({exc.strerror})")
    if isinstance(exc, av.error.ExitError) or isinstance(exc, TimeoutError):
        return IngestError(ErrorCode.TIMEOUT, f"no data from {source} within the timeout")
    if isinstance(exc, (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, socket.gaierror)):
        return IngestError(ErrorCode.UNREACHABLE, f"cannot connect to {source}: {_reason(exc)}")
    if isinstance(exc, FileNotFoundError):
        return IngestError(ErrorCode.NOT_FOUND, f"no such file: {source}")
    if isinstance(exc, PermissionError) and _is_url(source):
        # From FFmpeg's RTMP client: the server refused the play, as servers do for a stream
        # name nobody publishes (nginx-rtmp with idle_streams off, for one). Retried like a 404.
        return IngestError(ErrorCode.NOT_FOUND, f"the server refused to play {source}: nothing is published "
                                                f"there now (or it wants a key it did not get)")
    if isinstance(exc, PermissionError):
        return IngestError(ErrorCode.FORBIDDEN, f"permission denied reading {source}")
    if isinstance(exc, IsADirectoryError):
        return IngestError(ErrorCode.INVALID_SOURCE, f"{source} is a directory, not a media file")
    if isinstance(exc, av.error.DecoderNotFoundError):
        return IngestError(ErrorCode.UNSUPPORTED_CODEC, f"no decoder for a codec in {source}")
    if isinstance(exc, av.error.ProtocolNotFoundError):
        # resolve() only lets through schemes FFmpeg can have, so this is the build: the PyPI
        # wheels of PyAV, for one, come without libsrt.
        scheme = source.split("://", 1)[0]  # a path never gets here: resolve() rejects "x:..." schemes
        return IngestError(ErrorCode.DEPENDENCY_MISSING,
                           f"the FFmpeg that PyAV was built with has no {scheme!r} protocol, so {source} cannot be read "
                           f"here; use a PyAV built against an FFmpeg with it (for srt: --enable-libsrt)")
    if isinstance(exc, (av.error.InvalidDataError, av.error.EOFError, av.error.DemuxerNotFoundError)):
        if local_head is not None and _looks_like_media(local_head):
            return IngestError(ErrorCode.TRUNCATED, f"{source} looks like a media file but is cut off or damaged")
        return IngestError(ErrorCode.NOT_MEDIA, f"{source} is not a video or audio file FFmpeg can read")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED):
        return IngestError(ErrorCode.UNREACHABLE, f"cannot reach {source}: {_reason(exc)}")
    if isinstance(exc, OSError) and exc.errno == errno.EIO and _is_url(source):
        # FFmpeg's network clients end with a bare EIO when the server drops the stream; seen
        # from RTMP when the publisher goes off the air, which may pass.
        return IngestError(ErrorCode.STREAM_LOST, f"the server closed {source} or has no live stream there now")
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        return IngestError(ErrorCode.TIMEOUT, f"connection to {source} timed out")
    if isinstance(exc, OSError) and "resolve" in str(exc).lower():
        return IngestError(ErrorCode.UNREACHABLE, f"cannot resolve the host of {source}")
    return IngestError(ErrorCode.INTERNAL, f"unexpected error reading {source}: {type(exc).__name__}: {exc}")


def _is_url(source: str) -> bool:
    return "://" in source


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
