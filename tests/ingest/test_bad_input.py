"""Bad sources end in FAILED with the right error code and a readable message, never a crash."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from services.ingest.errors import ErrorCode, IngestError
from services.ingest.items import StatusEvent, StatusKind
from services.ingest.pipeline import IngestConfig, IngestPipeline
from services.ingest.netguard import NetworkPolicy
from services.ingest.source import SourceOptions, resolve
from streamsight.app.synth import make_media
from streamsight.natsd import free_port

# The servers these tests stand up listen on loopback, opened here as a lab would.
FAST = IngestConfig(source=SourceOptions(open_timeout=3.0, read_timeout=3.0, network=NetworkPolicy.from_settings(["127.0.0.0/8"])))


async def final_status(source: str) -> StatusEvent:
    statuses = [item async for item in IngestPipeline(source, FAST).items() if isinstance(item, StatusEvent)]
    assert len(statuses) == 1, statuses
    return statuses[0]


async def test_non_media_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are meeting notes, not a video\n" * 50)
    status = await final_status(str(path))
    assert status.kind is StatusKind.FAILED and status.code is ErrorCode.NOT_MEDIA
    assert "not a video or audio file" in status.message


async def test_truncated_file(tmp_path: Path) -> None:
    info = make_media(tmp_path / "full.mp4", duration=4.0, width=320, height=180, fps=15)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(info.path.read_bytes()[: info.path.stat().st_size // 2])  # the index (moov) is lost
    status = await final_status(str(cut))
    assert status.code is ErrorCode.TRUNCATED and "cut off" in status.message


async def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    assert (await final_status(str(tmp_path / "nope.mp4"))).code is ErrorCode.NOT_FOUND
    (tmp_path / "empty.mkv").write_bytes(b"")
    assert (await final_status(str(tmp_path / "empty.mkv"))).code is ErrorCode.NOT_MEDIA


async def test_playlist_404(tmp_path: Path) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status = await final_status(f"http://127.0.0.1:{server.server_address[1]}/missing/live.m3u8")
    finally:
        server.shutdown()
        server.server_close()
    assert status.code is ErrorCode.NOT_FOUND and "404" in status.message
    assert status.code.grpc_status == "NOT_FOUND"


@pytest.mark.parametrize("scheme", ["http", "rtmp", "rtsp"])
async def test_unreachable_host(scheme: str) -> None:
    status = await final_status(f"{scheme}://127.0.0.1:{free_port()}/live/stream")
    assert status.kind is StatusKind.FAILED
    assert status.code is ErrorCode.UNREACHABLE, status
    assert status.code.grpc_status == "UNAVAILABLE"


async def test_srt_without_libsrt_names_the_missing_protocol() -> None:
    status = await final_status(f"srt://127.0.0.1:{free_port()}")
    assert status.kind is StatusKind.FAILED
    if status.code is ErrorCode.DEPENDENCY_MISSING:  # PyAV's PyPI wheel: FFmpeg without libsrt
        assert "'srt' protocol" in status.message and "libsrt" in status.message, status
        assert status.code.grpc_status == "FAILED_PRECONDITION"
    else:  # a PyAV with libsrt: nobody listens on the port
        assert status.code in (ErrorCode.UNREACHABLE, ErrorCode.TIMEOUT), status


def test_unsupported_scheme_and_twitch_without_streamlink() -> None:
    with pytest.raises(IngestError) as err:
        resolve("ftp://example.org/a.mp4")
    assert err.value.code is ErrorCode.INVALID_SOURCE
    try:
        import streamlink  # noqa: F401
    except ImportError:
        with pytest.raises(IngestError) as err:
            resolve("https://www.twitch.tv/some_channel")
        assert err.value.code is ErrorCode.DEPENDENCY_MISSING
        assert err.value.code.grpc_status == "FAILED_PRECONDITION" and "streamlink" in err.value.message
    else:
        pytest.skip("streamlink is installed; the missing-dependency path cannot be checked")
