"""Live HLS served by a local HTTP server while its segments are written: stall, reconnect, gap, end."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.ingest.items import FrameSignals, StatusEvent, StatusKind, WindowRecord
from services.ingest.pipeline import IngestConfig, IngestPipeline, ReconnectPolicy
from services.ingest.netguard import NetworkPolicy
from services.ingest.source import SourceOptions

# The test servers listen on loopback, which sources may not reach unless a lab opens it.
LAB = NetworkPolicy.from_settings(["127.0.0.0/8"])


def live_config(give_up: float = 10.0) -> IngestConfig:
    """Short timeouts and backoff, so a test sees a stall, a reconnect and the end in seconds."""
    return IngestConfig(source=SourceOptions(open_timeout=3.0, read_timeout=1.5, network=LAB),
                        reconnect=ReconnectPolicy(initial=0.3, max_delay=1.0, give_up_after=give_up))


async def collect(pipeline: IngestPipeline) -> tuple[list[StatusEvent], list, list[WindowRecord]]:
    """Run the pipeline to its end: its statuses, frame signals and window records."""
    statuses, signals, windows = [], [], []
    async for item in pipeline.items():
        if isinstance(item, StatusEvent):
            statuses.append(item)
        elif isinstance(item, FrameSignals):
            signals.extend(item.signals)
        elif isinstance(item, WindowRecord):
            windows.append(item)
    return statuses, signals, windows


@pytest.mark.slow
async def test_live_hls_stall_reconnects_and_records_the_gap(live_hls) -> None:
    live_hls.run(preroll=2, stall_at=7, stall_seconds=4.0)
    statuses, signals, windows = await collect(IngestPipeline(live_hls.url, live_config()))
    kinds = [s.kind for s in statuses]
    assert kinds[0] is StatusKind.STARTED and statuses[0].details["live"] is True
    assert StatusKind.RECONNECTING in kinds and StatusKind.RECONNECTED in kinds
    assert kinds[-1] is StatusKind.ENDED, statuses[-1]
    gap = next(s for s in statuses if s.kind is StatusKind.GAP)
    lost = len(live_hls.skipped)
    assert lost >= 3
    # The segments published during the stall are lost: the gap is about their length.
    assert lost - 1.5 <= gap.details["missing_seconds"] <= lost + 1.5
    times = [s.media_time for s in signals]
    assert all(b > a for a, b in zip(times, times[1:])), "frames repeated or out of order after reconnect"
    jumps = [s for s in signals if s.gap_before > 1.0]
    assert len(jumps) == 1 and lost - 1.5 <= jumps[0].gap_before <= lost + 1.5
    assert sum(w.gaps for w in windows) >= 1
    # Every published segment after the stall was read to the end.
    assert times[-1] >= 15.0


@pytest.mark.slow
async def test_a_reconnect_that_loses_no_media_is_no_gap(live_hls) -> None:
    # A read timeout shorter than a segment's period: reads time out (as on a busy host) and
    # ingest reconnects, but every segment is still in the playlist and nothing is lost.
    live_hls.run(preroll=2, stall_at=4, stall_seconds=0.45)
    assert live_hls.skipped == []
    config = IngestConfig(source=SourceOptions(open_timeout=3.0, read_timeout=0.5, network=LAB),
                          reconnect=ReconnectPolicy(initial=0.1, max_delay=0.3, give_up_after=10.0))
    statuses, signals, windows = await collect(IngestPipeline(live_hls.url, config))
    kinds = [s.kind for s in statuses]
    assert StatusKind.RECONNECTED in kinds and kinds[-1] is StatusKind.ENDED, kinds
    assert StatusKind.GAP not in kinds, [s for s in statuses if s.kind is StatusKind.GAP]
    times = [s.media_time for s in signals]
    steps = [b - a for a, b in zip(times, times[1:])]
    assert max(steps) < 1.5 * min(steps), "a frame was lost or repeated at a reconnect"
    assert sum(w.gaps for w in windows) == 0


async def test_live_hls_without_end_marker_ends_after_the_timeout(live_hls) -> None:
    live_hls.run(preroll=3, limit=3, end=False)  # three segments, then silence; no EXT-X-ENDLIST
    statuses, signals, windows = await collect(IngestPipeline(live_hls.url, live_config(give_up=2.5)))
    assert statuses[0].details["live"] is True
    assert statuses[0].details["decoder_threads"] == 1  # real time: one decoding thread (a file: FFmpeg's choice)
    assert statuses[-1].kind is StatusKind.ENDED and "no data" in statuses[-1].message
    assert StatusKind.RECONNECTING in [s.kind for s in statuses]
    assert 2.5 <= signals[-1].media_time + 1 / 15 <= 3.01  # all three published seconds decoded
    assert windows and windows[-1].complete is False


async def test_cancelling_a_live_ingest_returns_at_once_and_the_thread_ends(live_hls) -> None:
    live_hls.run(preroll=2, limit=2, end=False)
    # The demuxer waits for segments that never come; each FFmpeg read may block up to 4 s.
    config = IngestConfig(source=SourceOptions(open_timeout=4.0, read_timeout=4.0, network=LAB),
                          reconnect=ReconnectPolicy(initial=0.2, give_up_after=60.0))
    pipeline = IngestPipeline(live_hls.url, config)
    started = asyncio.Event()

    async def consume() -> None:
        async for item in pipeline.items():
            if isinstance(item, StatusEvent) and item.kind is StatusKind.STARTED:
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(3.0)  # the two segments are read; the demuxer now waits for more
    assert pipeline.running
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 1.0  # the consumer is released at once
    assert await pipeline.wait_stopped(timeout=6.0)  # the thread ends by the read timeout at the latest
    assert not pipeline.running
