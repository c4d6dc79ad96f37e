"""The real stack (`up`'s supervisor, every service in its own process) with the service token set:
jobs succeed end to end (the gateway's calls to ingest and chat carry the token; clips download
with it), calls without it are refused; and an `analyze` job survives the gateway being killed and
restarted mid-job, seeing every event once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from streamsight.app.analyze import JobOptions
from streamsight.app.demo import make_sample
from streamsight.app.results import StreamResults
from streamsight.app.stack import running_stack
from streamsight.gen.chat.v1 import chat_pb2, chat_pb2_grpc
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import channel

from ..conftest import JobWithAKill

pytestmark = pytest.mark.slow
TOKEN = "stack-test-token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    with (folder / "stack.log").open("w") as log, running_stack(folder / "var", log, extra_env={"STREAMSIGHT_AUTH_TOKEN": TOKEN}) as sup:
        yield sup


def _media(stack, name: str) -> Path:
    """A folder the stack's gateway may read local files from by default (its data folder)."""
    return stack.data_dir / "gateway" / "media" / name


async def _refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code()


def test_every_internal_api_wants_the_token(stack):
    addresses = stack.addresses()

    async def check():
        async with channel(addresses["gateway"]) as g, channel(addresses["ingest"]) as i, channel(addresses["chat"], "wrong") as c:
            assert await _refused(gateway_pb2_grpc.StreamSightStub(g).ListStreams(gw.ListStreamsRequest())) == grpc.StatusCode.UNAUTHENTICATED
            assert await _refused(ingest_pb2_grpc.IngestStub(i).GetIngest(ingest_pb2.GetIngestRequest(stream_id="x"))) == grpc.StatusCode.UNAUTHENTICATED
            assert await _refused(chat_pb2_grpc.ChatStub(c).StopChat(chat_pb2.StopChatRequest(stream_id="x"))) == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(check())


def test_a_job_with_the_token_succeeds_end_to_end(stack, tmp_path):
    sample = make_sample(_media(stack, "job"), duration=30.0)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "streamsight.app.cli", "analyze", str(sample.video), "--chat", str(sample.chat), "--out", str(out),
               "--gateway", stack.addresses()["gateway"], "--token", TOKEN, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)  # --json: stdout is the report, progress went to stderr
    assert doc == json.loads((out / "report.json").read_text())
    assert doc["state"] == "ended", doc.get("error")
    assert [w["index"] for w in doc["windows"]] == [0, 1, 2]
    assert doc["sentiment"]["series"], "chat was dispatched with the token"
    assert doc["highlights"] and all(h["clip"] and (out / h["clip"]).stat().st_size > 1000 for h in doc["highlights"])
    assert "windows scored" in done.stderr


def test_analyze_survives_a_gateway_restart(stack, tmp_path, monkeypatch):
    sample = make_sample(_media(stack, "restart"), duration=40.0)
    out = tmp_path / "out"
    seen: list[int] = []
    original = StreamResults.add

    def recording(self, event):
        seen.append(event.sequence)
        return original(self, event)

    monkeypatch.setattr(StreamResults, "add", recording)
    options = JobOptions(source=str(sample.video), out=out, gateway=stack.addresses()["gateway"], token=TOKEN, live=True, wait_s=240)
    job = JobWithAKill(options)
    job.wait_until(lambda: len(seen) >= 3, 120, "no events from the job")  # the job runs and has events
    job.kill_and_finish(stack, "gateway", 400)
    printed, outcome = job.printed.getvalue(), job.outcome
    assert "lost the gateway" in printed and "reconnected to the gateway" in printed, printed
    assert len(seen) == len(set(seen)), "an event came twice"
    doc = json.loads((out / "report.json").read_text())
    assert doc["state"] == "ended" and [w["index"] for w in doc["windows"]] == [0, 1, 2, 3]

    async def every_event() -> set[int]:
        async with channel(stack.addresses()["gateway"], TOKEN) as ch:
            call = gateway_pb2_grpc.StreamSightStub(ch).WatchEvents(gw.WatchEventsRequest(stream_id=outcome["results"].stream_id, after_sequence=0))
            got: set[int] = set()
            try:
                while True:
                    event = await asyncio.wait_for(call.read(), 3.0)
                    got.add(event.sequence)
            except asyncio.TimeoutError:
                return got
            finally:
                call.cancel()

    assert set(seen) == asyncio.run(every_event()), "every event of the stream reached the job"
