"""Sources are safe by default: loopback (every spelling), link-local, private and metadata
addresses are refused after resolution, and on every redirect; a lab opens ranges one by one;
FFmpeg opens only the protocols of the source's kind."""

from __future__ import annotations

import http.server
import threading

import grpc
import pytest
from pydantic import ValidationError

from services.ingest.errors import ErrorCode, IngestError
from services.ingest.items import StatusEvent, StatusKind
from services.ingest.netguard import NetworkPolicy
from services.ingest.pipeline import IngestConfig, IngestPipeline
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from services.ingest.source import PROTOCOLS, SourceKind, SourceOptions, guard, resolve
from streamsight.app.synth import make_media
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import channel

REFUSED = [
    ("http://127.0.0.1:4222/", "loopback"),
    ("http://0x7f000001/live.m3u8", "loopback"),
    ("http://2130706433/live.m3u8", "loopback"),
    ("http://127.1:8222/varz", "loopback"),
    ("http://[::1]:8080/x.mp4", "loopback"),
    ("http://[::ffff:127.0.0.1]/x.mp4", "loopback"),
    ("http://localhost:8222/varz", "loopback"),
    ("rtmp://127.0.0.1/live/x", "loopback"),
    ("rtsp://127.0.0.1:8554/cam", "loopback"),
    ("srt://127.0.0.1:9000", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("http://169.254.10.20/x.mp4", "link-local"),
    ("http://[fe80::1]/x.mp4", "link-local"),
    ("http://10.0.0.5/x.mp4", "private"),
    ("http://172.16.3.4/x.mp4", "private"),
    ("http://192.168.1.10/x.m3u8", "private"),
    ("http://[fd12:3456::1]/x.mp4", "private"),
    ("http://0.0.0.0:8080/x.mp4", "unspecified"),
]


@pytest.mark.parametrize("url, rule", REFUSED)
def test_refused_addresses_name_their_rule(url, rule):
    with pytest.raises(IngestError) as err:
        guard(resolve(url), SourceOptions())
    assert err.value.code is ErrorCode.REFUSED_SOURCE and err.value.code.grpc_status == "INVALID_ARGUMENT"
    assert f"rule '{rule}'" in err.value.message


def test_a_lab_opens_ranges_one_by_one_and_metadata_stays_shut():
    lab = NetworkPolicy.from_settings(["127.0.0.0/8"])
    assert lab.refusal(_ip("127.0.0.1")) is None and lab.refusal(_ip("127.9.9.9")) is None
    assert lab.refusal(_ip("::1")) == "loopback", "IPv6 loopback is another range"
    assert lab.refusal(_ip("10.0.0.1")) == "private"
    everything = NetworkPolicy.from_settings(["0.0.0.0/0", "::/0"])
    assert everything.refusal(_ip("169.254.169.254")) == "metadata"
    with pytest.raises(IngestError, match="rule 'metadata'"):
        everything.check_host("metadata.google.internal", 80, "x")
    with pytest.raises(ValidationError, match="not an IP network"):
        IngestSettings(allow_networks=["loopback"])
    assert IngestSettings(allow_networks=["127.0.0.0/8", "::1/128"]).allow_networks == ["127.0.0.0/8", "::1/128"]


def _ip(text):
    import ipaddress

    return ipaddress.ip_address(text)


class _Site:
    """A loopback HTTP server: /redirect-out -> 302 to 127.0.0.2 (not opened), /redirect-in -> 302 to
    /clip.mp4 on itself, /clip.mp4 a real file; it records every path asked for."""

    def __init__(self, media: bytes):
        site = self
        self.paths: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                site.paths.append(self.path)
                if self.path == "/redirect-out":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.2:{site.port}/secret")
                    self.end_headers()
                elif self.path == "/redirect-in":
                    self.send_response(302)
                    self.send_header("Location", "/clip.mp4")
                    self.end_headers()
                elif self.path == "/clip.mp4":
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Content-Length", str(len(media)))
                    self.end_headers()
                    self.wfile.write(media)
                else:
                    self.send_response(404)
                    self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site(tmp_path):
    media = make_media(tmp_path / "clip.mp4", duration=2.0, width=320, height=180, fps=15)
    s = _Site(media.path.read_bytes())
    yield s
    s.close()


async def _statuses(url: str) -> list[StatusEvent]:
    lab = NetworkPolicy.from_settings(["127.0.0.1/32"])  # the test server's one address, not all of loopback
    config = IngestConfig(source=SourceOptions(open_timeout=3.0, read_timeout=3.0, network=lab))
    return [item async for item in IngestPipeline(url, config).items() if isinstance(item, StatusEvent)]


async def test_a_redirect_to_a_refused_address_is_not_followed(site):
    statuses = await _statuses(f"http://127.0.0.1:{site.port}/redirect-out")
    assert statuses[-1].kind is StatusKind.FAILED and statuses[-1].code is ErrorCode.REFUSED_SOURCE
    assert "rule 'loopback'" in statuses[-1].message and "127.0.0.2" in statuses[-1].message
    assert site.paths == ["/redirect-out"], "the redirect target was never asked for"


async def test_an_allowed_redirect_is_followed_here_and_ffmpeg_follows_none(site):
    statuses = await _statuses(f"http://127.0.0.1:{site.port}/redirect-in")
    assert statuses[-1].kind is StatusKind.ENDED, statuses[-1]
    assert site.paths[:2] == ["/redirect-in", "/clip.mp4"], "checked by the guard"
    assert site.paths.count("/redirect-in") == 1, "FFmpeg opened the checked final URL, not the redirect"


async def test_a_local_playlist_cannot_reach_the_network(site, tmp_path):
    playlist = tmp_path / "evil.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nhttp://127.0.0.1:{site.port}/clip.mp4\n#EXT-X-ENDLIST\n")
    statuses = await _statuses(str(playlist))
    assert statuses[-1].kind is StatusKind.FAILED
    assert "/clip.mp4" not in site.paths, "a file source opens files only (protocol_whitelist)"


def test_each_source_kind_has_its_protocols(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"x")
    assert resolve(str(tmp_path / "x.mp4")).ffmpeg_options["protocol_whitelist"] == "file"
    assert resolve("https://example.com/a.m3u8").ffmpeg_options["protocol_whitelist"] == PROTOCOLS[SourceKind.HLS]
    assert resolve("https://example.com/a.mp4").ffmpeg_options["max_redirects"] == "0"
    assert "file" not in PROTOCOLS[SourceKind.HLS] and "file" not in PROTOCOLS[SourceKind.RTMP]


async def test_the_ingest_api_answers_invalid_argument_naming_the_rule(nats_server, bus, tmp_path):
    ingest = IngestService(IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path))
    async with ingest.serving(), channel(ingest.address) as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)
        for url, rule in (("http://2130706433:8222/varz", "loopback"), ("http://169.254.169.254/latest/", "metadata")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id="ssrf", source=url, pacing=common_pb2.PACING_VOD))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and f"rule '{rule}'" in err.value.details()
        assert ingest.streams == {}, "nothing was started"


async def test_malformed_ingest_requests_are_invalid_argument(nats_server, bus, tmp_path):
    ingest = IngestService(IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path))
    bad = [
        ingest_pb2.StartIngestRequest(stream_id="bad", source="/tmp/a\x00b.mp4"),
        ingest_pb2.StartIngestRequest(stream_id="bad", source="/" + "p" * 100_000),
        ingest_pb2.StartIngestRequest(stream_id="bad", source="http://[::1"),
        ingest_pb2.StartIngestRequest(stream_id="bad", source="https://example.com/a.mp4", extra={"flow_fps": "5" * (9 * 1024 * 1024)}),
    ]
    async with ingest.serving(), channel(ingest.address) as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)
        for request in bad:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.StartIngest(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request.source[:40], err.value.details())
