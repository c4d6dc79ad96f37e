"""`streamsight highlights STREAM [--top 10]`: a stream's highlights, best first.

STREAM is a stream id on a running stack (read with the gateway's ListHighlights) or the path of
a report.json (or of the folder holding it) that `streamsight analyze` wrote. The highlights are
ranked by score (1 = best; see streamsight.app.results.ranked); each line gives the rank, the
moment's bounds and peak, the score, the reason ("loud sound (+18 LU) + fast motion (x4) + chat
spike (x6 rate) 4 s later") and the clip. `--json`: one JSON object per line, the keys of
report.json's highlights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

DEFAULT_GATEWAY = "127.0.0.1:50051"


def add_parser(subparsers) -> argparse.ArgumentParser:
    cmd = subparsers.add_parser("highlights", help="a stream's highlights, ranked (gateway, or a report.json)")
    cmd.add_argument("stream", help="stream id on the running stack, or a report.json (or its folder)")
    cmd.add_argument("--top", type=int, default=10, help="how many to list (default 10; 0 = all)")
    cmd.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"gateway address (default {DEFAULT_GATEWAY})")
    cmd.add_argument("--token", default=os.environ.get("STREAMSIGHT_AUTH_TOKEN", ""),
                     help="bearer token, if the gateway requires one (default: $STREAMSIGHT_AUTH_TOKEN)")
    cmd.add_argument("--json", action="store_true", help="one JSON object per line (report.json's highlight keys)")
    cmd.set_defaults(run=run)
    return cmd


def run(args) -> int:
    if args.top < 0:
        print("streamsight highlights: --top must be 0 (all) or more", file=sys.stderr)
        return 2
    path = Path(args.stream)
    if path.is_dir():
        path = path / "report.json"
    if path.suffix == ".json" or path.exists():
        try:
            rows = from_report(path)
        except (OSError, ValueError, KeyError) as exc:
            print(f"streamsight highlights: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    else:
        try:
            rows = asyncio.run(from_gateway(args.gateway, args.token, args.stream))
        except Exception as exc:  # a gRPC failure: one line and its exit code
            import grpc

            if isinstance(exc, grpc.aio.AioRpcError):
                from streamsight.app.cli import rpc_failure

                return rpc_failure("highlights", exc, args.gateway)
            raise
    shown = rows[: args.top] if args.top else rows
    for row in shown:
        print(json.dumps(row) if args.json else line(row))
    if not rows and not args.json:
        print(f"no highlights for {args.stream}", file=sys.stderr)
    return 0


def from_report(path: Path) -> list[dict]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    rows = list(doc["highlights"])
    if any("rank" not in h for h in rows):  # a report from before ranks: rank it here
        rows.sort(key=lambda h: (-h["score"], h["start_s"]))
        for k, h in enumerate(rows):
            h["rank"] = k + 1
    return sorted(rows, key=lambda h: h["rank"])


async def from_gateway(gateway: str, token: str, stream_id: str) -> list[dict]:
    from streamsight.app.results import ranked
    from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from streamsight.rpc import channel

    async with channel(gateway, token) as ch:
        reply = await gateway_pb2_grpc.StreamSightStub(ch).ListHighlights(gateway_pb2.ListHighlightsRequest(stream_id=stream_id), timeout=10)
    return [as_row(rank, h) for rank, h in ranked(reply.highlights)]


def as_row(rank: int, h) -> dict:
    """A Highlight event as report.json's highlight keys (without the local clip path)."""
    return {
        "rank": rank,
        "start_s": round(h.start_s, 3),
        "end_s": round(h.end_s, 3),
        "peak_s": round(h.peak_s, 3) if h.resolution == "moment" else None,
        "score": round(h.score, 4),
        "reason": h.reason or None,
        "chat_lag_s": round(h.chat_lag_s, 3) if h.chat_lag_s else None,
        "latency_s": round(h.latency_s, 3),
        "resolution": h.resolution or "windows",
        "glitch": h.glitch,
        "clip": h.clip.uri or None,
        "clip_id": h.clip.clip_id or None,
        "vertical_clip": h.vertical_clip.uri or None,
        "vertical_clip_id": h.vertical_clip.clip_id or None,
    }


def line(row: dict) -> str:
    peak = f" peak {row['peak_s']:.0f} s" if row.get("peak_s") is not None else ""
    glitch = "  [glitch]" if row.get("glitch") else ""
    clip = row.get("clip") or "no clip"
    if row.get("vertical_clip"):
        clip += f"  (9:16: {row['vertical_clip']})"
    return (f"#{row['rank']:<3} {_clock(row['start_s'])}-{_clock(row['end_s'])}{peak}  score {row['score']:.2f}  "
            f"{row.get('reason') or '-'}{glitch}  {clip}")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
