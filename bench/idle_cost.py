"""What the whole stack costs at rest: no stream, every service up (as `streamsight up` runs it).

Partitioned services keep polling NATS while idle (a pull per partition consumer, lease renewals,
rebalance reads), and that fixed cost comes before the first live stream (bench_live.py). This
reads, over `--seconds` after a settling pause, the messages nats-server takes in (its /varz) and
each process's CPU from /proc.

    python bench/idle_cost.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_analyze import cpu_seconds  # noqa: E402

from streamsight.app.stack import running_stack  # noqa: E402


def _varz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5) as r:
        return json.load(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured span")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after start-up before measuring")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp), io.StringIO()) as sup:
        time.sleep(args.settle)
        pids = {c.name: c.process.pid for c in sup.children if c.process}
        pids["nats-server"] = sup.nats.process.pid
        before, cpu_before, started = _varz(sup.nats.monitor_port), {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
        time.sleep(args.seconds)
        after, cpu_after, span = _varz(sup.nats.monitor_port), {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic() - started
    print(f"messages into NATS: {(after['in_msgs'] - before['in_msgs']) / span:.1f} a second, {(after['in_bytes'] - before['in_bytes']) / span:.0f} B/s")
    per = {n: (cpu_after[n] - cpu_before[n]) / span * 1000 for n in pids}
    for name, ms in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"{name:12s} {ms:6.1f} ms of CPU a second")
    print(f"{'all':12s} {sum(per.values()):6.1f} ms of CPU a second")


if __name__ == "__main__":
    main()
