"""Soak: twenty short jobs one after another through the real stack; nothing keeps growing.

Every service runs in its own process under the same Supervisor `streamsight up` uses, with
the embedded nats-server. What would make a process grow is checked directly first: every
stage holds no stream once the jobs are done (`streamsight_stage_active_streams`), MEDIA holds
nothing, no stream keeps a consumer beyond the services' durable ones, and nats-server has the
same client connections as after the first job.

Then resident memory, read from /proc after each job once no stage holds a stream (the report
can be done while glitch still finishes its last frames). A process's RSS after a job is not a
fixed number even when nothing leaks: glibc keeps what fragmentation pins, and nats-server is Go, whose collector lets the heap grow to twice the live data
before it runs (GOGC=100) and hands freed pages back minutes later. Measured here over 30
jobs (before consumers let go of their last batch between fetches), vision swung between 145
and 199 MB and nats-server between 53 and 92 MB, up and down with no trend, so "within 10 % of
job 1" failed at random. Their ceilings swing too: one job in
twenty could leave glitch 30 MB above the rest and the next job back down. What a leak does
instead is raise the floor, what the process keeps however the last job went: the lowest RSS
of the second half of the jobs must stay within `GROWTH` (15 %) of the lowest of jobs 2 to N/2
(job 1 pays for what is loaded once; once vision stepped up 15 MB at job 6 and stayed there,
154-156 MB to job 20), `SMALL_SLACK_MB` for a Python process under `SMALL_MB` where 15 % is
below the allocator's own swing, and `GO_HEADROOM` times for nats-server, whose floor
climbs with its collector's heap goal (53 -> 76 MB between the halves of one run here; what it
stores is checked directly above). A leak of 2.5 MB a job in a 150 MB process fails it.

Each job's highlights must have clips: fusion asks ingest for them after the stream has
ended, which is what ingest keeps a finished stream's clip buffer for.

Run with -s to see the per-process table; SOAK_JOBS=n runs n jobs instead of 20.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import urllib.request

import pytest

from streamsight import subjects
from streamsight.app.analyze import JobOptions, Progress, analyze
from streamsight.bus import Bus
from streamsight.app.demo import make_sample
from streamsight.app.stack import running_stack
from streamsight.app.supervisor import Supervisor

from ..conftest import free_port_block
from .conftest import EVERY_SERVICE, metric, readable_folders

pytestmark = pytest.mark.slow
JOBS = int(os.environ.get("SOAK_JOBS", "20"))
GROWTH = 0.15
SMALL_MB, SMALL_SLACK_MB = 100.0, 12.0
GO_HEADROOM = 2.0
STAGES = ("vision", "audio", "glitch", "fusion")  # the services whose StreamTable is exported


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _pids(sup: Supervisor) -> dict[str, int]:
    state = sup.state()
    pids = {name: child["pid"] for name, child in state["services"].items() if child["pid"]}
    pids["nats-server"] = sup.nats.process.pid
    return pids


async def _bus_state(url: str) -> dict[str, tuple[int, int, list[str]]]:
    """Per JetStream stream: (messages, bytes, consumer names)."""
    bus = await Bus.connect(url, "soak")
    try:
        out = {}
        for name in (subjects.MEDIA_STREAM, subjects.FEATURES_STREAM, subjects.EVENTS_STREAM, subjects.DEADLETTER_STREAM):
            info = await bus.js.stream_info(name)
            # An ephemeral consumer (no durable name) is shown as "~"
            consumers = sorted(c.config.durable_name or "~" for c in await bus.js.consumers_info(name))
            out[name] = (info.state.messages, info.state.bytes, consumers)
        return out
    finally:
        await bus.close()


def _nats_connections(sup: Supervisor, steady_s: float = 1.0, timeout_s: float = 15.0) -> int:
    """Client connections nats-server holds, from its monitoring endpoint, once the count has held for
    `steady_s`: the test's own bus client (_bus_state) has just closed, and the server counted it
    for a moment longer once (8 after job 1 against the stack's 7 at the end)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline, seen, since = time.monotonic() + timeout_s, None, time.monotonic()
    while True:
        with direct.open(f"http://127.0.0.1:{sup.nats.monitor_port}/varz", timeout=5) as r:
            count = json.load(r)["connections"]
        now = time.monotonic()
        if count != seen:
            seen, since = count, now
        elif now - since >= steady_s or now > deadline:
            return count
        time.sleep(0.2)


def _until_at_rest(sup: Supervisor, timeout_s: float = 30.0) -> None:
    """Wait until no stage holds a stream: the job's report can be done while glitch still
    finishes its last frames, and RSS read then is that work's, not what the process keeps."""
    deadline = time.monotonic() + timeout_s
    while any(metric(sup, stage, "streamsight_stage_active_streams", {"stage": stage}) for stage in STAGES):
        if time.monotonic() > deadline:
            return  # the check after the last job says which stage still holds one
        time.sleep(0.2)
    time.sleep(0.5)  # the stage trims its heap once the stream has ended (streamsight.heap.Trimmer)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack on its own thread's event loop, so every service's output keeps flowing."""
    folder = tmp_path_factory.mktemp("soak")
    base = free_port_block(len(EVERY_SERVICE))
    env = {"STREAMSIGHT_METRICS_BASE_PORT": str(base), **readable_folders(tmp_path_factory)}
    with (folder / "stack.log").open("w") as log, running_stack(folder / "var", log, extra_env=env) as sup:
        assert set(sup.state()["services"]) == EVERY_SERVICE, "the soak needs every service"
        sup.metrics_base_port = base
        yield sup


def test_twenty_jobs_leave_memory_flat(stack, tmp_path):
    assert JOBS >= 4, "SOAK_JOBS: at least 4 (two halves, job 1 aside)"
    sample = make_sample(tmp_path / "sample", duration=8.0)
    rss: list[dict[str, float]] = []
    bus_states = []
    for n in range(JOBS):
        out = tmp_path / f"job{n}"
        options = JobOptions(source=str(sample.video), chat=str(sample.chat), out=out, gateway=stack.addresses()["gateway"], wait_s=120)
        asyncio.run(analyze(options, Progress(io.StringIO())))
        doc = json.loads((out / "report.json").read_text())
        assert doc["state"] == "ended", doc.get("error")
        assert [w["index"] for w in doc["windows"]] == [0], f"job {n}: the 8 s sample is one scored window"
        assert all(h["clip"] for h in doc["highlights"]), f"job {n}: a highlight without its clip"
        _until_at_rest(stack)
        rss.append({name: _rss_mb(pid) for name, pid in _pids(stack).items()})
        bus_states.append(asyncio.run(_bus_state(stack.nats.url)))
        if n == 0:
            highlights = len(doc["highlights"])
            connections = _nats_connections(stack)

    names = sorted(rss[0])
    marks = sorted({m for m in (0, 1, JOBS // 4, JOBS // 2, 3 * JOBS // 4, JOBS - 1) if m < JOBS})
    print(f"\nRSS (MB) after job n of {JOBS} (8 s 640x360 sample with chat; {highlights} highlight(s) in job 0)")
    half = JOBS // 2
    print(f"{'process':<12}" + "".join(f"{'job ' + str(m + 1):>9}" for m in marks) + f"{'min 1st':>9}{'min 2nd':>9}")
    for name in names:
        floors = min(r[name] for r in rss[1:half]), min(r[name] for r in rss[half:])
        print(f"{name:<12}" + "".join(f"{rss[m][name]:>9.0f}" for m in marks) + "".join(f"{f:>9.0f}" for f in floors))
    print("JetStream after job n (messages, bytes, consumers):")
    for stream in bus_states[0]:
        print(f"  {stream:<11}" + "".join(f"  job {m + 1}: {bus_states[m][stream][0]} msgs, {bus_states[m][stream][1]} B, "
                                          f"{bus_states[m][stream][2]}" for m in (0, JOBS - 1)))

    assert bus_states[-1][subjects.MEDIA_STREAM][1] == 0, "MEDIA holds nothing once every job is done"
    # With no job running no ephemeral consumer should remain; those of the last job (chat's
    # per-stream readers) go 5 s after their subscription ends (the server's threshold), so
    # wait for that state. The durable consumers are the services' own, the same as after job 1.
    streams = (subjects.MEDIA_STREAM, subjects.EVENTS_STREAM)
    last = bus_states[-1]
    deadline = time.monotonic() + 30
    while any("~" in last[s][2] for s in streams) and time.monotonic() < deadline:
        time.sleep(0.5)
        last = asyncio.run(_bus_state(stack.nats.url))
    for stream in streams:
        durable = [c for c in bus_states[0][stream][2] if c != "~"]
        assert last[stream][2] == durable, f"{stream} consumers left behind: after job 1 {bus_states[0][stream][2]}, at the end {last[stream][2]}"

    held = {stage: metric(stack, stage, "streamsight_stage_active_streams", {"stage": stage}) for stage in STAGES}
    assert held == {stage: 0.0 for stage in STAGES}, f"a stage still holds streams after every job ended: {held}"
    assert _nats_connections(stack) == connections, "nats-server's client connections changed between job 1 and the end"

    grew = []
    for name in names:
        first = min(r[name] for r in rss[1:half])
        second = min(r[name] for r in rss[half:])
        if name == "nats-server":
            allowed = (GO_HEADROOM - 1) * first
        else:
            allowed = max(GROWTH * first, SMALL_SLACK_MB if first < SMALL_MB else 0.0)
        if second - first > allowed:
            grew.append(f"{name}: lowest {first:.0f} MB in jobs 2-{half}, {second:.0f} MB in jobs {half + 1}-{JOBS} (allowed +{allowed:.0f})")
    assert not grew, "memory kept growing over the jobs: " + "; ".join(grew)
