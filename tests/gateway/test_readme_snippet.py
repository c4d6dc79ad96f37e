"""README's Python snippet, run as written against a real gateway and ingest: on a stream that
fails it ends (it once waited forever), printing the failure."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def python_snippet() -> str:
    section = README.read_text().split("## The API from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


async def test_the_snippet_ends_on_a_failed_stream(nats_server, bus, tmp_path):
    junk = tmp_path / "media" / "notes.mp4"
    junk.parent.mkdir()
    junk.write_text("meeting notes, not a video\n" * 100)
    common = dict(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_s=1.0)
    ingest = IngestService(IngestSettings(data_dir=tmp_path / "ingest", **common))
    async with ingest.serving():
        settings = GatewaySettings(ingest_address=ingest.address, http_enabled=False, allow_local_files=True,
                                   local_roots=[str(junk.parent)], **common)
        async with GatewayService(settings).serving() as gateway:
            code = python_snippet()
            assert '"127.0.0.1:50051"' in code and '"https://example.com/live.m3u8"' in code
            code = code.replace('"127.0.0.1:50051"', repr(gateway.address)).replace('"https://example.com/live.m3u8"', repr(str(junk)))
            env = {k: v for k, v in os.environ.items() if k != "STREAMSIGHT_AUTH_TOKEN"}
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    assert "stream STREAM_STATE_FAILED" in out.decode() and "not a video" in out.decode()
