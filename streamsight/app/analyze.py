"""`streamsight analyze SOURCE`: the user's main job, end to end.

It uses the stack that `streamsight up` runs from the data folder (or the gateway named with
--gateway); with neither, it starts an embedded stack (NATS + every built service) on free
ports for the duration of the job. It submits the stream, shows progress (media time done,
speed as a multiple of real time), prints highlights, glitches and health incidents as they come, waits until
the stream's results are all in, downloads the clips (and their vertical copies), and writes report.json and report.html to --out.
"All in": the stream ended, every window is scored, and fusion's "analysed" status came (its last word
on the stream, published after its last score and highlight and after glitch and chat were done with
the stream: services/fusion/analysed.py) with as many highlights and scores as it counts. A stack
without that status (or with fusion not running) is waited on until SETTLE_S pass without an event.
When the gateway goes away mid-job (restarted by `up`), the event watch and clip downloads
reconnect for up to RECONNECT_S and resume after the last event seen: each event counts once.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from streamsight.app import report
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from streamsight.app.results import StreamResults, health_name
from streamsight.rpc import channel
from streamsight.app.supervisor import Supervisor, built_services, find_running

SETTLE_S = 2.0  # without fusion's "analysed" status: quiet time after the last event before the job is called done
ANALYSED = ("fusion", "analysed")  # (reporter, reason) of fusion's last word on a stream
# A lost gateway (restarted by `up`, say) is retried this long before the job gives up.
RECONNECT_S = 60.0
_LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED)


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
    reconnect_s: float = RECONNECT_S  # how long a lost gateway is retried
    labels: dict[str, str] = field(default_factory=dict)  # e.g. {"twitch.channel_id": "1234"} for the extension backend


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
        why = h.reason or ", ".join(f"{c.feature} {c.weight:+.2f}" for c in h.why[:3]) or "-"
        return f"HIGHLIGHT {h.start_s:7.1f}-{h.end_s:.1f} s  score {h.score:.2f}  {why}"
    if kind == "glitch" and event.glitch.phase in (events_pb2.PHASE_START, events_pb2.PHASE_END):
        g = event.glitch
        name = events_pb2.GlitchKind.Name(g.kind).removeprefix("GLITCH_KIND_").lower()
        if g.phase == events_pb2.PHASE_START:
            return f"GLITCH    {g.start_s:7.1f} s  {name} (confidence {g.confidence:.2f})"
        return f"GLITCH    {g.start_s:7.1f}-{g.end_s:.1f} s  {name} ended, severity {g.severity:.2f}"
    if kind == "health" and event.health.phase in (events_pb2.PHASE_START, events_pb2.PHASE_END):
        h = event.health
        detail = f"  {h.detail}" if h.detail else ""
        if h.phase == events_pb2.PHASE_START:
            return f"HEALTH    {h.start_s:7.1f} s  {health_name(h.kind)}{detail}"
        return f"HEALTH    {h.start_s:7.1f}-{max(h.end_s, h.start_s):.1f} s  {health_name(h.kind)} ended, severity {h.severity:.2f}"
    if kind == "status" and event.status.state == common_pb2.STREAM_STATE_FAILED:
        return f"FAILED    {event.status.detail}"
    if kind == "status" and event.status.reason == "gap":
        return f"GAP       {event.status.detail}"
    return None


class EventWatch:
    """The stream's events through WatchEvents, surviving a gateway restart: when the call breaks
    with the gateway gone, it calls again, after the last sequence it saw, until `reconnect_s`
    passes without a connection. Each event comes once."""

    def __init__(self, stub, stream_id: str, say, reconnect_s: float = RECONNECT_S, after: int | None = 0, types: list[str] | None = None):
        self.stub, self.stream_id, self.say = stub, stream_id, say
        self.reconnect_s = reconnect_s
        self.types = list(types or [])
        self.new_only = after is None  # until an event came: only events from now on
        self.last_sequence = after or 0
        self.reconnects = 0
        self.queue: asyncio.Queue[events_pb2.Event] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        lost_at: float | None = None
        while True:
            request = gateway_pb2.WatchEventsRequest(stream_id=self.stream_id, types=self.types)
            if not (self.new_only and self.last_sequence == 0):
                request.after_sequence = self.last_sequence
            call = self.stub.WatchEvents(request)
            try:
                async for event in call:
                    if lost_at is not None:
                        self.say(f"reconnected to the gateway; resuming after event {self.last_sequence}")
                        lost_at = None
                    if event.sequence and event.sequence <= self.last_sequence:
                        continue
                    self.last_sequence = max(self.last_sequence, event.sequence)
                    self.queue.put_nowait(event)
                return  # the gateway ended the call: nothing more will come
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _LOST:
                    raise
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    self.reconnects += 1
                    self.say(f"lost the gateway ({exc.code().name}); reconnecting for up to {self.reconnect_s:.0f} s")
                elif now - lost_at > self.reconnect_s:
                    raise
                await asyncio.sleep(0.5)
            finally:
                call.cancel()

    async def get(self, timeout: float) -> events_pb2.Event | None:
        """The next event, or None after `timeout` s without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    @property
    def ended(self) -> bool:
        return self.task.done() and self.queue.empty()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def analysed_status(event: events_pb2.Event) -> events_pb2.StreamStatus | None:
    """Fusion's "analysed" status, when `event` is it."""
    if event.WhichOneof("payload") == "status" and (event.status.reporter, event.status.reason) == ANALYSED:
        return event.status
    return None


def _all_in(results: StreamResults, analysed: events_pb2.StreamStatus | None) -> bool:
    """Whether every score and highlight that fusion's "analysed" status counts has come."""
    return analysed is not None and len(results.scores) >= analysed.windows_scored and len(results.highlights) >= analysed.highlights


async def _follow(stub, results: StreamResults, progress: Progress, expect_scores: bool, wait_s: float, reconnect_s: float = RECONNECT_S) -> None:
    """Read the stream's events until it finished and every window is scored, and fusion said it
    is done with the stream (or, without that, until SETTLE_S pass without an event)."""
    watch = EventWatch(stub, results.stream_id, progress.say, reconnect_s)
    last_event = time.monotonic()
    finished_at: float | None = None
    analysed: events_pb2.StreamStatus | None = None
    try:
        while True:
            event = await watch.get(0.5)
            now = time.monotonic()
            if event is None and watch.ended:
                watch.task.result()  # the watch broke for good: say why
                return
            if event is not None:
                last_event = now
                kind = results.add(event)
                if (status := analysed_status(event)) is not None:
                    analysed = status
                line = describe(kind, event)
                if line:
                    progress.say(line)
            progress.show(results)
            if results.finished:
                finished_at = finished_at or now
                scored = not expect_scores or results.state == common_pb2.STREAM_STATE_FAILED or (
                    results.windows_expected and len(results.scores) >= results.windows_expected
                )
                if scored and _all_in(results, analysed):
                    progress.say(f"all results in: fusion's analysed status came ({analysed.windows_scored} windows scored, "
                                 f"{analysed.highlights} highlights); not waiting {SETTLE_S:.0f} s for quiet")
                    return
                if scored and now - last_event >= SETTLE_S:
                    return
                if now - finished_at > wait_s:
                    progress.say(f"gave up waiting for window scores after {wait_s:.0f} s ({len(results.scores)}/{results.windows_expected})")
                    return
    finally:
        await watch.close()


async def _download_clip(stub, stream_id: str, clip_id: str, path: Path, reconnect_s: float) -> str:
    """Write one clip to `path` (as it streams in) and return its suffix; retried while the gateway is away."""
    deadline = time.monotonic() + reconnect_s
    while True:
        suffix = ".mp4"
        try:
            with path.open("wb") as f:
                async for chunk in stub.GetClip(gateway_pb2.GetClipRequest(stream_id=stream_id, clip_id=clip_id)):
                    f.write(chunk.data)
                    suffix = ".mkv" if chunk.content_type == "video/x-matroska" else ".mp4"
            return suffix
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _LOST or time.monotonic() > deadline:
                path.unlink(missing_ok=True)
                raise
            await asyncio.sleep(0.5)


async def _download_clips(stub, results: StreamResults, out: Path, reconnect_s: float = RECONNECT_S) -> dict[str, str]:
    files: dict[str, str] = {}
    clip_dir = out / "clips"
    for h in results.highlights.values():
        for clip_id in (h.clip.clip_id, h.vertical_clip.clip_id):  # the 16:9 clip, and its 9:16 copy when fusion cut one
            if not clip_id or clip_id in files:
                continue
            clip_dir.mkdir(parents=True, exist_ok=True)
            part = clip_dir / f"{clip_id}.part"
            try:
                suffix = await _download_clip(stub, results.stream_id, clip_id, part, reconnect_s)
            except grpc.aio.AioRpcError as exc:
                print(f"clip {clip_id}: {exc.details()}", file=sys.stderr)
                continue
            path = part.with_suffix(suffix)
            part.replace(path)
            files[clip_id] = str(path.relative_to(out))
    return files


async def run_job(gateway: str, options: JobOptions, services: list[str], progress: Progress) -> StreamResults:
    source = options.source if "://" in options.source else str(Path(options.source).resolve())
    chat = options.chat and (options.chat if ":" in options.chat.split("/")[0] else str(Path(options.chat).resolve()))
    request = gateway_pb2.StartStreamRequest(
        source=source,
        chat_source=chat or "",
        stream_id=options.stream_id,
        labels=options.labels,
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
        await _follow(stub, results, progress, expect_scores="fusion" in services or not services, wait_s=options.wait_s,
                      reconnect_s=options.reconnect_s)
        progress.show(results, force=True)
        if progress.tty:
            progress.out.write("\n")
        options.out.mkdir(parents=True, exist_ok=True)
        clip_files = await _download_clips(stub, results, options.out, options.reconnect_s)
    doc = report.build(results, clip_files, services)
    report.write_json(doc, options.out / "report.json")
    report.write_html(doc, options.out / "report.html")
    return results


def _named_folders(options: JobOptions) -> dict[str, str]:
    """The embedded stack's gateway may read the folders of the files named on the command line."""
    import json

    from streamsight.config import env_name

    folders = {str(Path(f).resolve().parent) for f in (options.source, options.chat) if f and "://" not in f and not f.startswith("twitch:")}
    return {env_name("gateway", "local_roots"): json.dumps(sorted(folders))} if folders else {}


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
            sup = Supervisor(Path(tmp), free_ports=True, out=log, extra_env=_named_folders(options))
            progress.say(f"starting an embedded stack ({', '.join(s.name for s in built_services())}); its log: {log_path}")
            await sup.start()
            try:
                await sup.wait_serving(timeout_s=180)
                return await run_job(sup.addresses()["gateway"], options, [c.spec.name for c in sup.children], progress)
            finally:
                await sup.stop()


def main(options: JobOptions, as_json: bool = False) -> int:
    """Run the job; exit code 0, 1 (the stream failed), or as streamsight.app.cli.rpc_failure says."""
    try:
        # With --json, stdout carries the report only; progress goes to stderr.
        results = asyncio.run(analyze(options, Progress(sys.stderr) if as_json else None))
    except grpc.aio.AioRpcError as exc:
        from streamsight.app.cli import rpc_failure

        return rpc_failure("analyze", exc, options.gateway or "the stack's gateway")
    except TimeoutError as exc:
        print(f"streamsight analyze: {exc}", file=sys.stderr)
        return 3
    if as_json:
        print((options.out / "report.json").read_text())
    else:
        print(f"report: {(options.out / 'report.html').resolve()}")
        print(f"        {(options.out / 'report.json').resolve()}")
        for line in report.summary_lines(results):
            print(line)
    if results.state == common_pb2.STREAM_STATE_FAILED:
        print(f"streamsight analyze: the stream failed: {results.last_error}", file=sys.stderr)
        return 1
    return 0
