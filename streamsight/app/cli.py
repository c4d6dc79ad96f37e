"""The `streamsight` command.

  streamsight analyze SOURCE          the main job: highlights, glitches, sentiment, clips, report
  streamsight demo                    analyze a generated sample (what `make demo` runs)
  streamsight up                      embedded NATS + every built service, until Ctrl-C
  streamsight streams                 list registered streams (gateway)
  streamsight events [--stream ID]    follow events (gateway WatchEvents; reconnects when the gateway restarts)
  streamsight highlights STREAM       a stream's highlights, ranked (gateway or a report.json)
  streamsight health TARGET           check a gRPC server's health (exit 0 when SERVING)
  streamsight config [--check]        every setting: YAML path, env variable, default (--check: validate)
  streamsight train-fusion ...        train and evaluate the fusion meta-model (needs the [train] extra)
  streamsight chat score              score chat lines from stdin as JSON lines
  streamsight chat backtest FILE      forecast error of the LSTM vs. baselines on a chat log
  streamsight --version

Data commands take --json (one JSON object per line, snake_case keys as in the HTTP API and
report.json). A failed call prints one line on stderr, never a traceback, and exits with:

  0  done                      1  the analysed stream failed
  2  bad request or usage (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, ...)
  3  gateway unreachable or too slow (UNAVAILABLE, DEADLINE_EXCEEDED)
  4  refused: missing or wrong token (UNAUTHENTICATED, PERMISSION_DENIED)
  5  the server failed (INTERNAL, ...)        130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

DEFAULT_GATEWAY = "127.0.0.1:50051"
EXIT_FAILED, EXIT_REQUEST, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_SERVER = 1, 2, 3, 4, 5


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("streamsight")
    except PackageNotFoundError:
        return "unknown (not installed)"


def rpc_failure(command: str, exc, target: str) -> int:
    """One line on stderr for a failed gRPC call; the exit code for its status."""
    import grpc

    code = exc.code()
    details = (exc.details() or "").splitlines()[0] if exc.details() else ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        line, status = f"cannot reach the gateway at {target} ({code.name}); is `streamsight up` running, or is --gateway wrong?", EXIT_UNREACHABLE
    elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        line, status = f"the gateway at {target} refused the call ({code.name}): give its token with --token", EXIT_AUTH
    elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED):
        line, status = f"the server failed ({code.name}): {details}", EXIT_SERVER
    else:
        line, status = f"{code.name}: {details}", EXIT_REQUEST
    print(f"streamsight {command}: {line}", file=sys.stderr)
    return status


def _to_json(message) -> str:
    from google.protobuf.json_format import MessageToJson

    return MessageToJson(message, indent=None, preserving_proto_field_name=True)


def _up(args) -> int:
    from streamsight.app.supervisor import run_up

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    return asyncio.run(run_up(Path(args.data_dir), args.nats_port, args.gateway_port, only, args.replicas, args.nats_nodes))


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a label is KEY=VALUE, not {text!r}")
    return key, value


def _analyze(args) -> int:
    from streamsight.app.analyze import JobOptions, main

    return main(
        JobOptions(
            source=args.source, chat=args.chat or "", live=args.live, out=Path(args.out), gateway=args.gateway or "",
            token=args.token, data_dir=Path(args.data_dir), stream_id=args.stream_id or "", labels=dict(args.label or []),
        ),
        as_json=args.json,
    )


def _demo(args) -> int:
    from streamsight.app.analyze import JobOptions, main
    from streamsight.app.demo import make_sample
    from streamsight.app.supervisor import find_running

    out = Path(args.out)
    folder = out / "sample"
    if find_running(Path(args.data_dir)):  # the running stack's gateway reads files from its data folder by default
        folder = Path(args.data_dir) / "gateway" / "media" / "demo"
    print(f"making a sample game stream in {folder} ...", file=sys.stderr if args.json else sys.stdout, flush=True)
    sample = make_sample(folder, duration=args.duration)
    return main(JobOptions(source=str(sample.video), chat=str(sample.chat), out=out, data_dir=Path(args.data_dir)), as_json=args.json)


def _config(args) -> int:
    from streamsight.config import config_command

    return config_command(args.check, args.markdown, args.section or None)


def _health(args) -> int:
    from streamsight.rpc import wait_serving

    import json

    try:
        asyncio.run(wait_serving(args.target, timeout_s=args.timeout))
    except TimeoutError as exc:
        if args.json:
            print(json.dumps({"target": args.target, "serving": False, "error": str(exc)}))
        print(f"streamsight health: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"target": args.target, "serving": True}) if args.json else f"{args.target}: SERVING")
    return 0


async def _streams(args) -> int:
    from streamsight.gen.common.v1 import common_pb2
    from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from streamsight.rpc import channel

    async with channel(args.gateway, args.token) as ch:
        reply = await gateway_pb2_grpc.StreamSightStub(ch).ListStreams(gateway_pb2.ListStreamsRequest(), timeout=10)
    for stream in reply.streams:
        if args.json:
            print(_to_json(stream))
        else:
            state = common_pb2.StreamState.Name(stream.state).removeprefix("STREAM_STATE_").lower()
            print(f"{stream.id:<24} {state:<9} {stream.media_time_s:8.1f} s  {stream.source}" + (f"  ({stream.last_error})" if stream.last_error else ""))
    if not reply.streams and not args.json:
        print("no streams registered", file=sys.stderr)
    return 0


def event_types(names: list[str] | None) -> list[str]:
    """Event type names from --type: full ones (streamsight.highlight.v1) or short ones (highlight)."""
    from streamsight import subjects

    by_kind = {kind: name for name, kind in subjects.EVENT_KINDS.items()}
    types = []
    for name in names or []:
        if name in subjects.EVENT_KINDS:
            types.append(name)
        elif name in by_kind:
            types.append(by_kind[name])
        else:
            print(f"streamsight events: unknown event type {name!r}; use one of {', '.join(sorted(by_kind))}", file=sys.stderr)
            raise SystemExit(EXIT_REQUEST)
    return types


def _event_line(event) -> str:
    from streamsight.app.analyze import describe

    kind = event.WhichOneof("payload") or "?"
    return f"{event.sequence:>6}  {event.stream_id:<20} {kind:<10} " + (describe(kind, event) or _to_json(getattr(event, kind)))


async def _events(args) -> int:
    from streamsight.app.analyze import EventWatch
    from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from streamsight.rpc import channel

    types = event_types(args.type)
    async with channel(args.gateway, args.token) as ch:
        stub = gateway_pb2_grpc.StreamSightStub(ch)
        # A clear answer now for no gateway, a wrong token or an unknown stream; later losses reconnect.
        if args.stream:
            await stub.GetStream(gateway_pb2.GetStreamRequest(stream_id=args.stream), timeout=10)
        else:
            await stub.ListStreams(gateway_pb2.ListStreamsRequest(), timeout=10)
        say = lambda text: print(f"streamsight events: {text}", file=sys.stderr, flush=True)  # noqa: E731
        watch = EventWatch(stub, args.stream or "", say, args.reconnect, args.after, types)
        try:
            while True:
                event = await watch.get(1.0)
                if event is not None:
                    print(_to_json(event) if args.json else _event_line(event), flush=True)
                elif watch.ended:
                    watch.task.result()
                    return 0
        finally:
            await watch.close()


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
    parser.add_argument("--version", action="version", version=f"streamsight {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="analyse a file or URL and write a report with clips")
    analyze.add_argument("source", help="media file or URL (http(s) incl. HLS, rtmp, rtsp, srt)")
    analyze.add_argument("--chat", help="chat replay file (rechat JSON, TwitchDownloader, chat-downloader, IRC log, CSV/JSONL) or twitch:<channel>")
    analyze.add_argument("--live", action="store_true", help="play the source in real time, as a live stream")
    analyze.add_argument("--out", default="out", help="folder for report.json, report.html and clips (default: out)")
    analyze.add_argument("--gateway", help="use the stack at this gateway address instead of finding or starting one")
    analyze.add_argument("--token", default=os.environ.get("STREAMSIGHT_AUTH_TOKEN", ""), help="bearer token for the gateway (default: $STREAMSIGHT_AUTH_TOKEN)")
    analyze.add_argument("--json", action="store_true", help="print report.json's document on stdout at the end instead of the summary")
    analyze.add_argument("--data-dir", default="var", help="where `streamsight up` keeps its state (default: var)")
    analyze.add_argument("--stream-id", help="identifier for the stream (default: generated)")
    analyze.add_argument("--label", action="append", type=_label, metavar="KEY=VALUE",
                         help="a label on the stream (repeatable), e.g. twitch.channel_id=12345 for the Twitch extension")
    analyze.set_defaults(run=_analyze)

    demo = sub.add_parser("demo", help="generate a sample game stream with chat and analyse it")
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--duration", type=float, default=60.0, help="sample length in seconds (default 60)")
    demo.add_argument("--data-dir", default="var", help="where `streamsight up` keeps its state (default: var)")
    demo.add_argument("--json", action="store_true", help="print report.json's document on stdout at the end instead of the summary")
    demo.set_defaults(run=_demo)

    up = sub.add_parser("up", help="start embedded NATS and every built service")
    up.add_argument("--data-dir", default="var", help="folder for NATS data, buffers and clips (default: var)")
    up.add_argument("--nats-port", type=int, default=4222, help="NATS client port (default 4222)")
    up.add_argument("--gateway-port", type=int, default=50051, help="public gRPC API port (default 50051)")
    up.add_argument("--only", default="", help="comma-separated services to start (default: all built)")
    up.add_argument(
        "--nats-nodes", type=int, default=1, metavar="N",
        help="run NATS as a JetStream cluster of N nats-servers on loopback (default 1); set nats_replicas (e.g. 3) for copies on each",
    )
    up.add_argument(
        "--replicas", default="", metavar="SERVICE=N,...",
        help="processes per service, e.g. vision=2,glitch=2 (default: each service's replicas setting, 1); each has its own ports and STREAMSIGHT_REPLICA_ID=<service>-<n>",
    )
    up.set_defaults(run=_up)

    config = sub.add_parser("config", help="list every setting (YAML path, env variable, default), or --check them")
    config.add_argument("--check", action="store_true", help="load every service's settings as it would at start; exit 2 if any is bad")
    config.add_argument("--markdown", action="store_true", help="print Markdown tables (README's settings reference)")
    config.add_argument("--section", action="append", help="only this section (repeatable): gateway, ingest, chat, vision, audio, glitch, fusion")
    config.set_defaults(run=_config)

    health = sub.add_parser("health", help="check that a gRPC server is SERVING")
    health.add_argument("target", nargs="?", default=DEFAULT_GATEWAY)
    health.add_argument("--timeout", type=float, default=5.0)
    health.add_argument("--json", action="store_true", help='print {"target": ..., "serving": true|false}')
    health.set_defaults(run=_health)

    for name, func, text in (("streams", _streams, "list registered streams"), ("events", _events, "follow events (--json: JSON lines)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"gateway address (default {DEFAULT_GATEWAY})")
        cmd.add_argument("--token", default=os.environ.get("STREAMSIGHT_AUTH_TOKEN", ""), help="bearer token, if the gateway requires one (default: $STREAMSIGHT_AUTH_TOKEN)")
        cmd.add_argument("--json", action="store_true", help="one JSON object per line (snake_case keys)")
        if name == "events":
            cmd.add_argument("--stream", help="only this stream's events")
            cmd.add_argument("--type", action="append", help="only this event type (repeatable): highlight, glitch, status, ... or streamsight.highlight.v1")
            cmd.add_argument("--after", type=int, help="replay events after this sequence number (0: all); default: new events only")
            cmd.add_argument("--reconnect", type=float, default=300.0, help="seconds to keep reconnecting to a lost gateway (default 300)")
        cmd.set_defaults(run=lambda a, f=func: asyncio.run(f(a)))

    from streamsight.app import highlights

    highlights.add_parser(sub)

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
    except Exception as exc:
        import grpc

        if isinstance(exc, grpc.aio.AioRpcError):
            return rpc_failure(args.command, exc, getattr(args, "gateway", None) or DEFAULT_GATEWAY)
        raise


if __name__ == "__main__":
    sys.exit(main())
