"""The arithmetic and measurements of bench_live.py: percentiles, the keeps-up verdict, /proc, /metrics.

Keeps up. A live stream keeps up when the stack handles its media at least as fast as it
comes, which shows in three ways, all required:

- ingest read the source without a gap (a reader slower than real time falls out of the live
  playlist's sliding window and loses segments: ingest reports a gap);
- no sampled frame was dropped under the live drop policy (ingest drops only when a stream's
  analysers are behind by `ingest.max_backlog` messages or MEDIA is full);
- every window was scored with all its expected modalities in (none scored without one because
  fusion's live deadline passed or a stage stalled);
- its score latency (a window's end, on the source's capture clock, to the arrival of the
  window's score) does not grow: the least-squares slope of latency over media time is at most
  `MAX_SLOPE` seconds per second (a stack at 0.9x real time adds 0.11 s of latency per media
  second, so 60 s of media show it), and no window's latency passes `MAX_LATENCY_S`.

Per-process figures come from /proc: CPU seconds are utime + stime of the process (all its
threads) between two readings; RSS is VmRSS, sampled on a thread.
"""

from __future__ import annotations

import math
import os
import threading
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

MAX_SLOPE = 0.05  # seconds of latency gained per media second: 0.95x real time or better
MAX_LATENCY_S = 15.0  # fusion's default live deadline: past it a window is scored without a late modality
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs; 0 with fewer than two distinct xs."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


@dataclass
class Verdict:
    keeps_up: bool
    reasons: list[str] = field(default_factory=list)
    slope: float = 0.0


def keeps_up(window_ends: list[float], latencies: list[float], dropped: int, missing_windows: int, expected_windows: int | None = None,
             gaps: int = 0) -> Verdict:
    """The verdict for one stream (see the module docstring): window ends (media s) and their score latencies (s)."""
    reasons = []
    if gaps:
        reasons.append(f"{gaps} gaps: ingest fell out of the live playlist's window")
    if dropped:
        reasons.append(f"{dropped} frames dropped")
    if missing_windows:
        reasons.append(f"{missing_windows} windows scored with a modality missing")
    if expected_windows is not None and len(latencies) < expected_windows:
        reasons.append(f"{len(latencies)} of {expected_windows} windows scored")
    if not latencies:
        reasons.append("no window scored")
        return Verdict(False, reasons)
    rate = slope(window_ends, latencies)
    if rate > MAX_SLOPE:
        reasons.append(f"latency grows {rate:.2f} s per media second")
    worst = max(latencies)
    if worst > MAX_LATENCY_S:
        reasons.append(f"a window's score came {worst:.1f} s after its end")
    return Verdict(not reasons, reasons, rate)


# -- /proc ------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        parts = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (parts + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class ProcSampler:
    """Every process's RSS sampled every `period` s, their summed peak and mean, CPU seconds between enter and exit."""

    def __init__(self, procs: dict[str, int], period: float = 0.5) -> None:
        self.procs, self.period = procs, period
        self.peak: dict[str, float] = {}
        self.mean: dict[str, float] = {}
        self.total_peak = 0.0
        self.cpu: dict[str, float] = {}
        self.machine_cpu = 0.0
        self._sums: dict[str, float] = {name: 0.0 for name in procs}
        self._count = 0
        self._cpu0: dict[str, float] = {}
        self._busy0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def _sample(self) -> None:
        now = {}
        for name, pid in self.procs.items():
            try:
                now[name] = rss_mb(pid)
            except (OSError, StopIteration):
                now[name] = 0.0
        for name, value in now.items():
            self.peak[name] = max(self.peak.get(name, 0.0), value)
            self._sums[name] += value
        self._count += 1
        self.total_peak = max(self.total_peak, sum(now.values()))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> "ProcSampler":
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in self.procs.items()}
        self._busy0 = machine_busy_s()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.cpu = {name: cpu_seconds(pid) - self._cpu0[name] for name, pid in self.procs.items()}
        self.machine_cpu = machine_busy_s() - self._busy0
        self.mean = {name: total / self._count for name, total in self._sums.items()}


def rest_rss(procs: dict[str, int]) -> dict[str, float]:
    return {name: rss_mb(pid) for name, pid in procs.items()}


# -- Prometheus ---------------------------------------------------------------------------------
def scrape(port: int, timeout: float = 2.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One service's /metrics as {(sample name, sorted labels): value}; empty when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def summed(metrics: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for (n, lab), v in metrics.items() if n == name and all(dict(lab).get(k) == val for k, val in labels.items()))
