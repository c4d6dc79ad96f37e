"""The `streamsight` command.

  streamsight analyze SOURCE          the main job: highlights, glitches, sentiment, clips, report
  streamsight demo                    analyze a generated sample (what `make demo` runs)
  streamsight up                      embedded NATS + every built service, until Ctrl-C
  streamsight streams                 list registered streams (gateway)
  streamsight events [--stream ID]    follow events as JSON lines (gateway WatchEvents)
  streamsight health TARGET           check a gRPC server's health (exit 0 when SERVING)
  streamsight config [--check]        every setting: YAML path, env variable, default (--check: validate)
  streamsight train-fusion ...        train and evaluate the fusion meta-model (needs the [train] extra)
  streamsight chat score              score chat lines from stdin as JSON lines
  streamsight chat backtest FILE      forecast error of the LSTM vs. baselines on a chat log
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

DEFAULT_GATEWAY = "127.0.0.1:50051"


def _up(args) -> int:
    from streamsight.app.supervisor import run_up

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    return asyncio.run(run_up(Path(args.data_dir), args.nats_port, args.gateway_port, only))


def _analyze(args) -> int:
    from streamsight.app.analyze import JobOptions, main

    return main(
        JobOptions(
            source=args.source, chat=args.chat or "", live=args.live, out=Path(args.out), gateway=args.gateway or "",
            token=args.token, data_dir=Path(args.data_dir), stream_id=args.stream_id or "",
        )
    )


def _demo(args) -> int:
    from streamsight.app.analyze import JobOptions, main
    from streamsight.app.demo import make_sample

    out = Path(args.out)
    print(f"making a sample game stream in {out / 'sample'} ...", flush=True)
    sample = make_sample(out / "sample", duration=args.duration)
    return main(JobOptions(source=str(sample.video), chat=str(sample.chat), out=out, data_dir=Path(args.data_dir)))


def _config(args) -> int:
    from streamsight.config import config_command

    return config_command(args.check, args.markdown, args.section or None)


def _health(args) -> int:
    from streamsight.rpc import wait_serving

    try:
        asyncio.run(wait_serving(args.target, timeout_s=args.timeout))
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.target}: SERVING")
    return 0


async def _streams(args) -> int:
    from google.protobuf.json_format import MessageToJson

    from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from streamsight.rpc import channel

    async with channel(args.gateway, args.token) as ch:
        reply = await gateway_pb2_grpc.StreamSightStub(ch).ListStreams(gateway_pb2.ListStreamsRequest(), timeout=10)
    for stream in reply.streams:
        print(MessageToJson(stream, indent=None))
    return 0


async def _events(args) -> int:
    from google.protobuf.json_format import MessageToJson

    from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from streamsight.rpc import channel

    request = gateway_pb2.WatchEventsRequest(stream_id=args.stream or "", types=args.type or [])
    if args.after is not None:
        request.after_sequence = args.after
    async with channel(args.gateway, args.token) as ch:
        async for event in gateway_pb2_grpc.StreamSightStub(ch).WatchEvents(request):
            print(MessageToJson(event, indent=None), flush=True)
    return 0


def _chat(args) -> int:
    from services.chat import cli as chat_cli

    main = chat_cli.score_main if args.tool == "score" else chat_cli.backtest_main
    return main(args.rest)


# Tools with options of their own: everything after their name is theirs (--help included).
PASS_THROUGH = {
    ("train-fusion",): lambda rest: _train_fusion(argparse.Namespace(rest=rest)),
    ("chat", "score"): lambda rest: _chat(argparse.Namespace(tool="score", rest=rest)),
    ("chat", "backtest"): lambda rest: _chat(argparse.Namespace(tool="backtest", rest=rest)),
}


def _train_fusion(args) -> int:
    try:
        from training.fusion.train import train_fusion_main
    except ImportError as exc:
        print(f"streamsight train-fusion needs the training tools (pip install -e '.[train]' from a checkout): {exc}", file=sys.stderr)
        return 2
    return train_fusion_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamsight", description="Real-time analytics for live video streams.")
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="analyse a file or URL and write a report with clips")
    analyze.add_argument("source", help="media file or URL (http(s) incl. HLS, rtmp, rtsp, srt)")
    analyze.add_argument("--chat", help="chat replay file (rechat JSON, TwitchDownloader, chat-downloader, IRC log, CSV/JSONL) or twitch:<channel>")
    analyze.add_argument("--live", action="store_true", help="play the source in real time, as a live stream")
    analyze.add_argument("--out", default="out", help="folder for report.json, report.html and clips (default: out)")
    analyze.add_argument("--gateway", help="use the stack at this gateway address instead of finding or starting one")
    analyze.add_argument("--token", default="", help="bearer token for the gateway")
    analyze.add_argument("--data-dir", default="var", help="where `streamsight up` keeps its state (default: var)")
    analyze.add_argument("--stream-id", help="identifier for the stream (default: generated)")
    analyze.set_defaults(run=_analyze)

    demo = sub.add_parser("demo", help="generate a sample game stream with chat and analyse it")
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--duration", type=float, default=60.0, help="sample length in seconds (default 60)")
    demo.add_argument("--data-dir", default="var", help="where `streamsight up` keeps its state (default: var)")
    demo.set_defaults(run=_demo)

    up = sub.add_parser("up", help="start embedded NATS and every built service")
    up.add_argument("--data-dir", default="var", help="folder for NATS data, buffers and clips (default: var)")
    up.add_argument("--nats-port", type=int, default=4222, help="NATS client port (default 4222)")
    up.add_argument("--gateway-port", type=int, default=50051, help="public gRPC API port (default 50051)")
    up.add_argument("--only", default="", help="comma-separated services to start (default: all built)")
    up.set_defaults(run=_up)

    config = sub.add_parser("config", help="list every setting (YAML path, env variable, default), or --check them")
    config.add_argument("--check", action="store_true", help="load every service's settings as it would at start; exit 2 if any is bad")
    config.add_argument("--markdown", action="store_true", help="print Markdown tables (README's settings reference)")
    config.add_argument("--section", action="append", help="only this section (repeatable): gateway, ingest, chat, vision, audio, glitch, fusion")
    config.set_defaults(run=_config)

    health = sub.add_parser("health", help="check that a gRPC server is SERVING")
    health.add_argument("target", nargs="?", default=DEFAULT_GATEWAY)
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(run=_health)

    for name, func, text in (("streams", _streams, "list registered streams"), ("events", _events, "follow events as JSON lines")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"gateway address (default {DEFAULT_GATEWAY})")
        cmd.add_argument("--token", default="", help="bearer token, if the gateway requires one")
        if name == "events":
            cmd.add_argument("--stream", help="only this stream's events")
            cmd.add_argument("--type", action="append", help="only this event type (repeatable), e.g. streamsight.highlight.v1")
            cmd.add_argument("--after", type=int, help="replay events after this sequence number (0: all)")
        cmd.set_defaults(run=lambda a, f=func: asyncio.run(f(a)))

    train = sub.add_parser("train-fusion", help="train and evaluate the fusion meta-model (see --help of the tool)", add_help=False)
    train.add_argument("rest", nargs=argparse.REMAINDER)
    train.set_defaults(run=_train_fusion)

    chat = sub.add_parser("chat", help="chat tools: score (stdin -> JSON lines), backtest FILE")
    chat.add_argument("tool", choices=["score", "backtest"])
    chat.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the tool (see streamsight chat TOOL --help)")
    chat.set_defaults(run=_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for prefix, tool in PASS_THROUGH.items():
        if tuple(argv[: len(prefix)]) == prefix:
            return int(tool(argv[len(prefix) :]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
