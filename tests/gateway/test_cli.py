"""The CLI against a real gateway: one-line errors with exit codes (no tracebacks), --version,
--json with snake_case keys, short event type names."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import grpc
import pytest

from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.natsd import free_port
from streamsight.rpc import channel

from ..platform.conftest import running_gateway

CAMEL = re.compile(r'"[a-z]+[A-Z][A-Za-z]*"\s*:')


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamsight.app.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {err}"
    assert "Traceback" not in err and "AioRpcError" not in err
    return lines[0]


async def test_version():
    code, out, _ = await _cli("--version")
    assert code == 0 and re.fullmatch(r"streamsight \S+\n", out)


async def test_no_gateway_is_one_line_and_exit_3():
    address = f"127.0.0.1:{free_port()}"
    for args in (("streams",), ("events", "--type", "highlight"), ("analyze", "x.mp4", "--gateway", address)):
        code, _, err = await _cli(*args, "--gateway", address) if args[0] != "analyze" else await _cli(*args)
        assert code == 3, (args, err)
        assert "cannot reach the gateway" in _one_line(err)


@pytest.fixture
async def gateway_with_a_stream(nats_server):
    async with running_gateway(nats_server.url, auth_token="cli-token") as gateway, channel(gateway.address, "cli-token") as ch:
        stub = gateway_pb2_grpc.StreamSightStub(ch)
        sid = f"cli{free_port()}"
        with pytest.raises(grpc.aio.AioRpcError):  # no ingest: the stream is recorded as failed, with status events
            await stub.StartStream(gw.StartStreamRequest(source="https://example.com/live.m3u8", stream_id=sid))
        yield gateway, sid


async def test_request_errors_are_one_line_and_exit_2_or_4(gateway_with_a_stream):
    gateway, _ = gateway_with_a_stream
    common = ("--gateway", gateway.address, "--token", "cli-token")
    code, _, err = await _cli("events", "--stream", "nobody", *common)
    assert code == 2 and "NOT_FOUND" in _one_line(err)
    code, _, err = await _cli("events", "--type", "highlights", *common)
    assert code == 2 and "unknown event type 'highlights'" in _one_line(err)
    code, _, err = await _cli("streams", "--gateway", gateway.address)
    assert code == 4 and "--token" in _one_line(err)


async def test_json_output_uses_snake_case(gateway_with_a_stream):
    gateway, sid = gateway_with_a_stream
    common = ("--gateway", gateway.address, "--token", "cli-token")
    code, out, err = await _cli("streams", "--json", *common)
    assert code == 0, err
    streams = [json.loads(line) for line in out.splitlines()]
    mine = next(s for s in streams if s["id"] == sid)
    assert "created_at" in mine and "last_error" in mine, mine
    assert not CAMEL.search(out), out
    code, out, err = await _cli("streams", *common)
    assert code == 0, err
    assert any(line.startswith(sid) and "failed" in line for line in out.splitlines())

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamsight.app.cli", "events", "--stream", sid, "--type", "status", "--after", "0", "--json", *common,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
    finally:
        proc.terminate()
        await proc.wait()
    event = json.loads(line)
    assert event["stream_id"] == sid and event["status"]["reporter"] == "gateway"
    assert not CAMEL.search(line.decode()), line


def test_the_embedded_stack_may_read_the_folders_named_on_the_command_line(tmp_path):
    from streamsight.app.analyze import JobOptions, _named_folders

    named = _named_folders(JobOptions(source=str(tmp_path / "a" / "v.mp4"), chat=str(tmp_path / "b" / "chat.json")))
    assert json.loads(named["STREAMSIGHT_GATEWAY_LOCAL_ROOTS"]) == sorted([str(tmp_path / "a"), str(tmp_path / "b")])
    assert _named_folders(JobOptions(source="https://example.com/live.m3u8", chat="twitch:somebody")) == {}


async def test_events_reconnects_after_a_gateway_restart_and_repeats_nothing(nats_server, bus):
    from streamsight.gen.events.v1 import events_pb2

    port = free_port()
    sid = f"restart{port}"
    async with running_gateway(nats_server.url, grpc_port=port, auth_token="cli-token") as gateway, channel(gateway.address, "cli-token") as ch:
        with pytest.raises(grpc.aio.AioRpcError):  # no ingest: two status events (registered, dispatch_failed)
            await gateway_pb2_grpc.StreamSightStub(ch).StartStream(gw.StartStreamRequest(source="https://example.com/live.m3u8", stream_id=sid))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamsight.app.cli", "events", "--stream", sid, "--after", "0", "--json",
            "--gateway", gateway.address, "--token", "cli-token", "--reconnect", "60",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        first = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)) for _ in range(2)]
    try:
        # The gateway is gone; an event arrives meanwhile, then a new gateway on the same port.
        await bus.publish_event(sid, events_pb2.StreamStatus(stream_id=sid, reason="while-away", reporter="test"), f"{sid}:away")
        async with running_gateway(nats_server.url, grpc_port=port, auth_token="cli-token"):
            third = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
            await bus.publish_event(sid, events_pb2.StreamStatus(stream_id=sid, reason="after", reporter="test"), f"{sid}:after")
            fourth = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert [e["status"]["reason"] for e in first] == ["registered", "dispatch_failed"]
    assert third["status"]["reason"] == "while-away" and fourth["status"]["reason"] == "after", "resumed after the last event, none repeated"
    sequences = [int(e["sequence"]) for e in (*first, third, fourth)]
    assert sequences == sorted(set(sequences))
    assert "lost the gateway" in err.decode() and "reconnected" in err.decode()
