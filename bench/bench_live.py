"""How many live 720p30 streams the whole stack holds, their highlight latency, memory per stream.

N live channels are served as live HLS from a local HTTP server (bench/live_sources.py: a real
recording, ../shared/data/media/openarena_dm2.mp4, encoded once as a live encoder would, 1280x720
30 fps H.264 + AAC, 1 s segments, played in real time with a sliding-window playlist). The whole
stack runs as `streamsight up` runs it (every service in its own process, embedded nats-server;
streamsight.app.stack), and each channel is started through the gateway's StartStream with its
live URL, as a user would (pacing left to the stack: a live HLS URL is read as it comes and
falls under the live drop policy). Streams start staggered over one window, as independent
channels would. No chat (the events say the wait fusion applied all the same). NATS runs without
users unless --nats-auth, which gives each service its own user as `up` does (streamsight/natsauth.py;
a 1-stream round with it kept up on 2026-12-03).

Per stream it reports
- whether it kept up (bench/live_stats.py says how that is judged: no gap, no frame dropped, every
  window scored with all its modalities, score latency not growing); a round keeps up when every
  stream does and no stage (glitch included, which no score waits for) was more than 15 s of
  media behind ingest at the last lag sample while every source was still live;
- frames dropped under the live drop policy (the window records' `frames_dropped`, read from
  NATS, and ingest's `streamsight_ingest_frames_dropped_total`);
- latency, on the source's clock: a window's end is the wall time at which the live source
  captured that media time (its HLS segment came out then: segments end on window ends). Score
  latency: to the arrival of the window's score at a WatchEvents caller; highlight latency: from
  the end of the data the highlight was decided on (its end + `latency_s`, which already holds
  the wait for chat) to the highlight's arrival. Ingest latency: to its window record on NATS.
and per round: CPU seconds and RSS (peak, mean) per process from /proc, the largest stage lag
seen (`streamsight_stage_lag_seconds`), the machine's CPU used by other processes meanwhile,
and RSS per active stream = (peak of the stack's summed RSS - its sum at rest) / N.

    .venv/bin/python bench/bench_live.py [--streams 1 2 4 6] [--seconds 60] [--find-max] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats

from live_sources import LiveHlsServer, LiveStream, prepare_segments
from live_stats import MAX_LATENCY_S, ProcSampler, keeps_up, percentile, rest_rss, scrape, summed
from streamsight import subjects
from streamsight.app.results import StreamResults
from streamsight.app.stack import running_stack
from streamsight.app.supervisor import METRICS_STEP, parse_replicas
from streamsight.config import SECTIONS, env_name
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from streamsight.gen.media.v1 import media_pb2
from streamsight.rpc import channel

WINDOW_S = 10.0
SETTLE_S = 4.0
DRAIN_S = 90.0  # longest wait for a round's last scores after its sources ended
SCRAPE_S = 2.0
EVENT_TYPES = ["streamsight.score.v1", "streamsight.highlight.v1", "streamsight.status.v1"]


@dataclass
class StreamRun:
    """What one stream of a round produced, with wall-clock arrival times."""

    name: str
    live: LiveStream
    results: StreamResults
    started: float = 0.0
    score_at: dict[int, float] = field(default_factory=dict)  # window -> arrival of its (first) score
    highlights: list[tuple[events_pb2.Highlight, float]] = field(default_factory=list)
    windows: dict[int, tuple[float, int, float]] = field(default_factory=dict)  # window -> (end_s, frames_dropped, arrival)
    gaps: list[float] = field(default_factory=list)  # seconds of media lost in each gap ingest reported (a reader past the playlist's window)

    @property
    def done(self) -> bool:
        r = self.results
        return r.finished and (r.state == common_pb2.STREAM_STATE_FAILED or len(r.scores) >= r.windows_expected)

    def score_latencies(self) -> tuple[list[float], list[float]]:
        ends, lat = [], []
        for window, score in sorted(self.results.scores.items()):
            ends.append(score.end_s)
            lat.append(self.score_at[window] - self.live.capture_time(score.end_s))
        return ends, lat

    def highlight_latencies(self) -> list[float]:
        return [at - self.live.capture_time(h.end_s + h.latency_s) for h, at in self.highlights]

    def ingest_latencies(self) -> list[float]:
        return [at - self.live.capture_time(end) for end, _, at in self.windows.values()]

    @property
    def dropped(self) -> int:
        return sum(d for _, d, _ in self.windows.values())

    @property
    def missing_windows(self) -> int:
        return sum(1 for s in self.results.scores.values() if s.missing)


@dataclass
class Round:
    n: int
    streams: list[StreamRun]
    wall_s: float
    sampler: ProcSampler
    rest: dict[str, float]
    stage_lag: dict[str, float]
    stage_lag_end: dict[str, float]  # each stage's lag at the last sample while every source was still live
    dropped_by_reason: dict[str, float]
    procs: list[str]

    def stack_rest(self) -> float:
        return sum(v for k, v in self.rest.items() if k != "bench")

    def rss_per_stream(self) -> float:
        peak = self.sampler.total_peak - self.sampler.peak.get("bench", 0.0)  # the bench's own process is not the stack
        return (peak - self.stack_rest()) / self.n

    def verdicts(self):
        out = []
        for s in self.streams:
            ends, lat = s.score_latencies()
            out.append(keeps_up(ends, lat, s.dropped, s.missing_windows, s.results.windows_expected or None, len(s.gaps)))
        return out

    @property
    def stages_behind(self) -> dict[str, float]:
        """Stages (glitch too, which no score waits for) still over fusion's live deadline behind ingest as the sources ended."""
        return {k: v for k, v in self.stage_lag_end.items() if v > MAX_LATENCY_S}

    @property
    def all_keep_up(self) -> bool:
        return all(v.keeps_up for v in self.verdicts()) and not self.stages_behind


def free_port_block(size: int) -> int:
    """A base port with `size` consecutive free ports after it (the services' metrics ports)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size >= 65535:
            continue
        try:
            held = []
            for p in range(base, base + size + 1):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no block of free ports for the metrics servers")


def processes(sup) -> dict[str, int]:
    out = {name: child["pid"] for name, child in sup.state()["services"].items() if child["pid"]}
    out["nats-server"] = sup.nats.process.pid
    out["bench"] = os.getpid()
    return out


async def run_round(sup, server: LiveHlsServer, n: int, tag: str, metrics_base: int, seconds: float, vod: bool = False) -> Round:
    procs = processes(sup)
    await asyncio.sleep(SETTLE_S)
    rest = rest_rss(procs)
    gateway = sup.addresses()["gateway"]
    runs: dict[str, StreamRun] = {}
    stage_lag: dict[str, float] = {}
    stage_lag_end: dict[str, float] = {}
    metric_ports = {name: metrics_base + SECTIONS[name].metrics_offset for name in sup.addresses()}
    before = {name: scrape(port) for name, port in metric_ports.items()}

    nc = await nats.connect(sup.nats_url("admin"))  # the plain URL when NATS has no users

    async def on_window(msg) -> None:
        record = media_pb2.WindowRecord()
        record.ParseFromString(msg.data)
        run = runs.get(record.stream_id)
        if run is not None:
            run.windows.setdefault(record.index, (record.end_s, record.frames_dropped, time.time()))

    sub = await nc.subscribe(subjects.media("windows", ">"), cb=on_window)

    async def scrape_lags() -> None:
        while True:
            for port in metric_ports.values():
                for (name, labels), value in (await asyncio.to_thread(scrape, port)).items():
                    if name == "streamsight_stage_lag_seconds":
                        stage = dict(labels).get("stage", "?")
                        stage_lag[stage] = max(stage_lag.get(stage, 0.0), value)
                        if time.time() < min((r.live.t0 + r.live.duration_s for r in runs.values()), default=math.inf):
                            stage_lag_end[stage] = value
            await asyncio.sleep(SCRAPE_S)

    async with channel(gateway) as ch:
        stub = gateway_pb2_grpc.StreamSightStub(ch)
        call = stub.WatchEvents(gateway_pb2.WatchEventsRequest(types=EVENT_TYPES))

        async def watch() -> None:
            async for event in call:
                at = time.time()
                run = runs.get(event.stream_id)
                if run is None:
                    continue
                kind = run.results.add(event)
                if kind == "score":
                    run.score_at.setdefault(event.score.window, at)
                elif kind == "highlight":
                    run.highlights.append((event.highlight, at))
                elif kind == "status" and event.status.reason == "gap":
                    run.gaps.append(event.status.gap_s)

        watcher = asyncio.create_task(watch())
        lags = asyncio.create_task(scrape_lags())
        await asyncio.sleep(0.5)  # the watch is in place before the first stream
        with ProcSampler(procs) as sampler:
            started = time.monotonic()
            for k in range(n):
                if k:
                    await asyncio.sleep(WINDOW_S / n)
                name = f"{tag}-s{k}"
                live = server.add(name, now=time.time() - server.segments[-1].end_s if vod else None)
                runs[name] = StreamRun(name, live, StreamResults(name, server.url(name)), started=time.time())
                await stub.StartStream(gateway_pb2.StartStreamRequest(source=server.url(name), stream_id=name), timeout=30)
            deadline = time.monotonic() + seconds + WINDOW_S + DRAIN_S
            while time.monotonic() < deadline and not all(r.done for r in runs.values()):
                if watcher.done():
                    watcher.result()
                    break
                await asyncio.sleep(0.5)
            wall = time.monotonic() - started
        for task in (watcher, lags):
            task.cancel()
        await asyncio.gather(watcher, lags, return_exceptions=True)
    await sub.unsubscribe()
    await nc.close()
    after = {name: scrape(port) for name, port in metric_ports.items()}
    dropped = {}
    for reason in ("backlog", "media_full"):
        dropped[reason] = summed(after.get("ingest", {}), "streamsight_ingest_frames_dropped_total", reason=reason) - summed(
            before.get("ingest", {}), "streamsight_ingest_frames_dropped_total", reason=reason)
    return Round(n, list(runs.values()), wall, sampler, rest, stage_lag, stage_lag_end, dropped, sorted(procs))


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def report(r: Round, out=sys.stdout) -> dict:
    p = lambda xs, q: percentile(xs, q)  # noqa: E731
    verdicts = r.verdicts()
    print(f"\n== N={r.n}: {r.wall_s:.0f} s wall, {'every stream keeps up' if r.all_keep_up else 'NOT every stream keeps up'}", file=out)
    print(f"{'stream':<14}{'keeps up':>9}{'windows':>8}{'gaps':>5}{'dropped':>8}{'ingest p50':>11}{'score p50':>10}{'p95':>7}{'hl n':>5}"
          f"{'hl p50':>8}{'p95':>7}{'wait':>6}  why not", file=out)
    all_score, all_hl, all_ingest, rows = [], [], [], []
    for s, v in zip(r.streams, verdicts):
        _, lat = s.score_latencies()
        hl, ing = s.highlight_latencies(), s.ingest_latencies()
        all_score += lat
        all_hl += hl
        all_ingest += ing
        waits = sorted({round(h.wait_s, 1) for h, _ in s.highlights})
        print(f"{s.name:<14}{'yes' if v.keeps_up else 'NO':>9}{len(lat):>8}{len(s.gaps):>5}{s.dropped:>8}{fmt(p(ing, 50)):>11}{fmt(p(lat, 50)):>10}"
              f"{fmt(p(lat, 95)):>7}{len(hl):>5}{fmt(p(hl, 50)):>8}{fmt(p(hl, 95)):>7}{','.join(map(str, waits)) or '-':>6}  "
              f"{'; '.join(v.reasons)}", file=out)
        rows.append({"stream": s.name, "keeps_up": v.keeps_up, "reasons": v.reasons, "latency_slope": v.slope, "windows": len(lat),
                     "windows_expected": s.results.windows_expected, "dropped": s.dropped, "missing_windows": s.missing_windows,
                     "score_latency_s": lat, "highlight_latency_s": hl, "ingest_latency_s": ing,
                     "highlight_wait_s": waits, "highlight_data_past_end_s": [h.latency_s for h, _ in s.highlights], "gaps_s": s.gaps, "first_segment": s.live.first_requested, "state": s.results.state})
    print(f"all streams: score latency p50 {fmt(p(all_score, 50), 2)} s p95 {fmt(p(all_score, 95), 2)} s; highlight latency "
          f"p50 {fmt(p(all_hl, 50), 2)} s p95 {fmt(p(all_hl, 95), 2)} s ({len(all_hl)} highlights); ingest p50 {fmt(p(all_ingest, 50), 2)} s; "
          f"ingest's drop counter: {', '.join(f'{k} {v:.0f}' for k, v in r.dropped_by_reason.items())}", file=out)
    print(f"stage lag (streamsight_stage_lag_seconds), largest / as the sources ended: "
          f"{', '.join(f'{k} {v:.1f} / {r.stage_lag_end.get(k, math.nan):.1f} s' for k, v in sorted(r.stage_lag.items())) or '-'}"
          f"{'; over ' + str(MAX_LATENCY_S) + ' s: ' + ', '.join(r.stages_behind) if r.stages_behind else ''}", file=out)
    ours = sum(r.sampler.cpu.values())
    print(f"{'process':<12}{'CPU s':>8}{'cores':>7}{'RSS rest':>10}{'peak':>8}{'mean':>8}", file=out)
    for name in r.procs:
        print(f"{name:<12}{r.sampler.cpu[name]:>8.1f}{r.sampler.cpu[name] / r.wall_s:>7.2f}{r.rest[name]:>10.0f}"
              f"{r.sampler.peak[name]:>8.0f}{r.sampler.mean[name]:>8.0f}", file=out)
    others = r.sampler.machine_cpu - ours
    print(f"CPU: these processes {ours:.0f} s ({ours / r.wall_s:.2f} cores), the rest of the machine {others:.0f} s "
          f"({others / r.wall_s:.2f} cores) of {os.cpu_count()} cores x {r.wall_s:.0f} s", file=out)
    stack_cpu = ours - r.sampler.cpu.get("bench", 0.0)
    per_stream = stack_cpu / r.wall_s / r.n
    if r.all_keep_up:
        print(f"cores per stream: {per_stream:.3f} (the stack's CPU seconds / wall seconds / N): {os.cpu_count()} idle cores would hold "
              f"at most {os.cpu_count() / per_stream:.1f} such streams", file=out)
    else:
        print(f"cores per stream: {per_stream:.3f}, an underestimate: the streams fell behind, work was left undone", file=out)
    print(f"RSS per active stream: {r.rss_per_stream():.0f} MB (stack peak {r.sampler.total_peak - r.sampler.peak['bench']:.0f} MB, "
          f"at rest {r.stack_rest():.0f} MB)", file=out)
    out.flush()
    return {
        "n": r.n, "wall_s": r.wall_s, "all_keep_up": r.all_keep_up, "streams": rows,
        "score_latency_p50_s": p(all_score, 50), "score_latency_p95_s": p(all_score, 95),
        "highlight_latency_p50_s": p(all_hl, 50), "highlight_latency_p95_s": p(all_hl, 95), "highlights": len(all_hl),
        "dropped_by_reason": r.dropped_by_reason, "stage_lag_max_s": r.stage_lag, "stage_lag_end_s": r.stage_lag_end,
        "cpu_s": r.sampler.cpu, "rss_rest_mb": r.rest, "rss_peak_mb": r.sampler.peak, "rss_mean_mb": r.sampler.mean,
        "other_cpu_s": others, "rss_per_stream_mb": r.rss_per_stream(), "cores_per_stream": per_stream,
    }


def largest_kept(tried: dict[int, bool]) -> int:
    """The largest N that kept up with every smaller N tried keeping up too; 0 when none."""
    best = 0
    for n, ok in sorted(tried.items()):
        if not ok:
            break
        best = n
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 6], help="rounds of N concurrent live streams")
    parser.add_argument("--seconds", type=float, default=60.0, help="media seconds each stream plays")
    parser.add_argument("--segment-s", type=float, default=1.0, help="HLS segment length (a keyframe each)")
    parser.add_argument("--find-max", action="store_true", help="then add a stream per round until one stops keeping up")
    parser.add_argument("--max-n", type=int, default=16, help="largest N --find-max tries (ingest.max_streams)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "streamsight-bench-live", help="encoded segments")
    parser.add_argument("--json", type=Path, help="write every round's figures here")
    parser.add_argument("--replicas", default="", metavar="SERVICE=N,...", help="processes per service as `up --replicas` (e.g. glitch=2)")
    parser.add_argument("--nats-auth", action="store_true", help="NATS with a user per service, as `up` runs it (off: one open server)")
    parser.add_argument("--stack-log", type=Path, help="keep the stack's log here (default: in a temporary folder, removed)")
    args = parser.parse_args()
    print(f"encoding {args.seconds:g} s of the live source (cached in {args.cache}) ...", flush=True)
    segments = prepare_segments(args.cache, args.seconds, args.segment_s)
    replicas = parse_replicas(args.replicas)
    # replica n of a service serves metrics METRICS_STEP * (n - 1) above the first: the block covers them all
    metrics_base = free_port_block(len(SECTIONS) + METRICS_STEP * (max(replicas.values(), default=1) - 1))
    env = {
        env_name("ingest", "allow_networks"): json.dumps(["127.0.0.0/8"]),  # the live server is on loopback
        "STREAMSIGHT_METRICS_BASE_PORT": str(metrics_base),
    }
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, LiveHlsServer(segments) as server:
        folder = Path(tmp)
        with (args.stack_log or folder / "stack.log").open("w") as log, running_stack(folder / "var", log, extra_env=env, nats_auth=args.nats_auth,
                                                                                   replicas=replicas) as sup:
            print(f"stack up: {', '.join(sorted(sup.addresses()))}; fusion.live_chat_wait_s = "
                  f"{os.environ.get(env_name('fusion', 'live_chat_wait_s'), '10 (default)')}; no chat", flush=True)
            # Warm-up: one short stream whose segments are all out (a VOD playlist of the last few), so
            # models, codecs and pools are loaded before the first round is measured.
            asyncio.run(run_round(sup, server, 1, "warm", metrics_base, 6.0, vod=True))
            tried: dict[int, bool] = {}
            for k, n in enumerate(args.streams):
                r = asyncio.run(run_round(sup, server, n, f"r{k}n{n}", metrics_base, args.seconds))
                rounds.append(report(r))
                tried[n] = r.all_keep_up
            if args.find_max:  # one more stream per round, from the largest N that kept up, to the first that does not
                n = max((m for m, ok in tried.items() if ok), default=0) + 1
                while n <= args.max_n and tried.get(n, True):
                    if n not in tried:
                        r = asyncio.run(run_round(sup, server, n, f"max{n}", metrics_base, args.seconds))
                        rounds.append(report(r))
                        tried[n] = r.all_keep_up
                    n += 1
            tried_text = ", ".join(f"{m}: {'yes' if ok else 'no'}" for m, ok in sorted(tried.items()))
            print(f"\nlargest N that kept up: {largest_kept(tried) or 'none'} (tried {tried_text})")
    if args.json:
        args.json.write_text(json.dumps({"seconds": args.seconds, "segment_s": args.segment_s, "rounds": rounds}, indent=1, default=float))


if __name__ == "__main__":
    main()
