"""`streamsight analyze SOURCE`: the user's main job, end to end.

It uses the stack that `streamsight up` runs from the data folder (or the gateway named with
--gateway); with neither, it starts an embedded stack (NATS + every built service) on free
ports for the duration of the job. It submits the stream, shows progress (media time done,
speed as a multiple of real time), prints highlights and glitches as they come, waits until
every window is scored, downloads the clips, and writes report.json and report.html to --out.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from streamsight.app import report
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from streamsight.app.results import StreamResults
from streamsight.rpc import channel
from streamsight.app.supervisor import Supervisor, built_services, find_running

SETTLE_S = 2.0  # quiet time after the last event before the job is called done


@dataclass
class JobOptions:
    source: str
    chat: str = ""
    live: bool = False
    out: Path = Path("out")
    gateway: str = ""
    token: str = ""
    data_dir: Path = Path("var")
    stream_id: str = ""
    wait_s: float = 180.0  # longest wait for scores after the stream ended


class Progress:
    """One status line: media time, speed, windows scored; a carriage-return line on a terminal."""

    def __init__(self, out=None, scored: bool = True):
        self.out = out or sys.stdout
        self.scored = scored  # progress counts scored windows (fusion runs) rather than ingested media
        self.tty = self.out.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def line(self, r: StreamResults) -> str:
        """Analysed media time (windows scored by fusion, else media ingested) and speed."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        analysed = max((s.end_s for s in r.scores.values()), default=0.0) if self.scored else r.media_time_s
        total = r.duration_s
        if total:
            filled = int(20 * min(analysed / total, 1.0))
            bar = "[" + "#" * filled + "-" * (20 - filled) + f"] {analysed:6.1f}/{total:.1f} s"
        else:
            bar = f"{analysed:6.1f} s"
        state = common_pb2.StreamState.Name(r.state).removeprefix("STREAM_STATE_").lower()
        return (
            f"{bar}  {analysed / elapsed:5.1f}x real time  ingested {r.media_time_s:.1f} s  windows scored {len(r.scores)}"
            f"  highlights {len(r.highlights)}  glitches {len(r.glitches)}  ({state})"
        )

    def show(self, r: StreamResults, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.out.write("\r" + self.line(r) + "\033[K")
            self.out.flush()
        elif force or now - self._last >= 5.0:
            self.out.write(self.line(r) + "\n")
            self.out.flush()
            self._last = now

    def say(self, text: str) -> None:
        self.out.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.out.flush()


def describe(kind: str, event: events_pb2.Event) -> str | None:
    """A line for the moments a person wants to see as they happen."""
    if kind == "highlight":
        h = event.highlight
        why = ", ".join(f"{c.feature} {c.weight:+.2f}" for c in h.why[:3]) or "-"
        return f"HIGHLIGHT {h.start_s:7.1f}-{h.end_s:.1f} s  score {h.score:.2f}  why: {why}"
    if kind == "glitch" and event.glitch.phase in (events_pb2.PHASE_START, events_pb2.PHASE_END):
        g = event.glitch
        name = events_pb2.GlitchKind.Name(g.kind).removeprefix("GLITCH_KIND_").lower()
        if g.phase == events_pb2.PHASE_START:
            return f"GLITCH    {g.start_s:7.1f} s  {name} (confidence {g.confidence:.2f})"
        return f"GLITCH    {g.start_s:7.1f}-{g.end_s:.1f} s  {name} ended, severity {g.severity:.2f}"
    if kind == "status" and event.status.state == common_pb2.STREAM_STATE_FAILED:
        return f"FAILED    {event.status.detail}"
    if kind == "status" and event.status.reason == "gap":
        return f"GAP       {event.status.detail}"
    return None


async def _follow(stub, results: StreamResults, progress: Progress, expect_scores: bool, wait_s: float) -> None:
    """Read the stream's events until it finished and every window is scored (or quiet)."""
    call = stub.WatchEvents(gateway_pb2.WatchEventsRequest(stream_id=results.stream_id, after_sequence=0))
    queue: asyncio.Queue[events_pb2.Event | None] = asyncio.Queue()

    async def read() -> None:  # a reader task: cancelling a read would end the whole call
        try:
            async for event in call:
                queue.put_nowait(event)
        finally:
            queue.put_nowait(None)

    reader = asyncio.create_task(read())
    last_event = time.monotonic()
    finished_at: float | None = None
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=0.5)
            except asyncio.TimeoutError:
                event = None
            now = time.monotonic()
            if event is None and reader.done():
                reader.result()  # the watch broke: say why
                return
            if event is not None:
                last_event = now
                kind = results.add(event)
                line = describe(kind, event)
                if line:
                    progress.say(line)
            progress.show(results)
            if results.finished:
                finished_at = finished_at or now
                scored = not expect_scores or results.state == common_pb2.STREAM_STATE_FAILED or (
                    results.windows_expected and len(results.scores) >= results.windows_expected
                )
                if scored and now - last_event >= SETTLE_S:
                    return
                if now - finished_at > wait_s:
                    progress.say(f"gave up waiting for window scores after {wait_s:.0f} s ({len(results.scores)}/{results.windows_expected})")
                    return
    finally:
        call.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _download_clips(stub, results: StreamResults, out: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    clip_dir = out / "clips"
    for h in results.highlights.values():
        if not h.clip.clip_id or h.clip.clip_id in files:
            continue
        clip_dir.mkdir(parents=True, exist_ok=True)
        data, suffix = bytearray(), ".mp4"
        try:
            async for chunk in stub.GetClip(gateway_pb2.GetClipRequest(stream_id=results.stream_id, clip_id=h.clip.clip_id)):
                data += chunk.data
                suffix = ".mkv" if chunk.content_type == "video/x-matroska" else ".mp4"
        except grpc.aio.AioRpcError as exc:
            print(f"clip {h.clip.clip_id}: {exc.details()}", file=sys.stderr)
            continue
        path = clip_dir / f"{h.clip.clip_id}{suffix}"
        path.write_bytes(bytes(data))
        files[h.clip.clip_id] = str(path.relative_to(out))
    return files


async def run_job(gateway: str, options: JobOptions, services: list[str], progress: Progress) -> StreamResults:
    source = options.source if "://" in options.source else str(Path(options.source).resolve())
    chat = options.chat and (options.chat if ":" in options.chat.split("/")[0] else str(Path(options.chat).resolve()))
    request = gateway_pb2.StartStreamRequest(
        source=source,
        chat_source=chat or "",
        stream_id=options.stream_id,
        options=gateway_pb2.StreamOptions(
            pacing=common_pb2.PACING_LIVE if options.live else common_pb2.PACING_UNSPECIFIED, play_file_as_live=options.live
        ),
    )
    async with channel(gateway, options.token) as ch:
        stub = gateway_pb2_grpc.StreamSightStub(ch)
        stream = await stub.StartStream(request, timeout=30)
        results = StreamResults(stream.id, source)
        progress.scored = "fusion" in services or not services
        progress.say(f"analysing {source} as stream {stream.id} ({', '.join(services) or 'remote stack'})")
        await _follow(stub, results, progress, expect_scores="fusion" in services or not services, wait_s=options.wait_s)
        progress.show(results, force=True)
        if progress.tty:
            progress.out.write("\n")
        options.out.mkdir(parents=True, exist_ok=True)
        clip_files = await _download_clips(stub, results, options.out)
    doc = report.build(results, clip_files, services)
    report.write_json(doc, options.out / "report.json")
    report.write_html(doc, options.out / "report.html")
    return results


async def analyze(options: JobOptions, progress: Progress | None = None) -> StreamResults:
    """Run the job on the stack it finds or starts; returns what the stream produced."""
    progress = progress or Progress()
    if options.gateway:
        return await run_job(options.gateway, options, [], progress)
    running = find_running(options.data_dir)
    if running:
        return await run_job(running["gateway"], options, sorted(running["services"]), progress)
    with tempfile.TemporaryDirectory(prefix="streamsight-") as tmp:
        log_path = options.out / "stack.log"
        options.out.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:
            sup = Supervisor(Path(tmp), free_ports=True, out=log)
            progress.say(f"starting an embedded stack ({', '.join(s.name for s in built_services())}); its log: {log_path}")
            await sup.start()
            try:
                await sup.wait_serving(timeout_s=180)
                return await run_job(sup.addresses()["gateway"], options, [c.spec.name for c in sup.children], progress)
            finally:
                await sup.stop()


def main(options: JobOptions) -> int:
    try:
        results = asyncio.run(analyze(options))
    except grpc.aio.AioRpcError as exc:
        print(f"streamsight analyze: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"streamsight analyze: {exc}", file=sys.stderr)
        return 3
    print(f"report: {(options.out / 'report.html').resolve()}")
    print(f"        {(options.out / 'report.json').resolve()}")
    for line in report.summary_lines(results):
        print(line)
    if results.state == common_pb2.STREAM_STATE_FAILED:
        print(f"the stream failed: {results.last_error}", file=sys.stderr)
        return 1
    return 0
