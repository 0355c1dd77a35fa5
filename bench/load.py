"""Load test for the fast styles: bounded in time and count, loopback only.

    .venv/bin/python -m bench.load                       # starts its own server, 60 s, concurrency 4
    .venv/bin/python -m bench.load --url http://127.0.0.1:8080 --duration 120

Reports requests, failures, latency percentiles and throughput, and (when it started the
server itself) the server's resident memory after warm-up and at the end, to catch leaks.
It can kill one worker mid-run (``--kill-worker-at``) to check that TorchServe replaces
it and that only in-flight requests fail.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
from PIL import Image

from bench.photos import content_photos

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    duration: float = 0.0
    failure_times: list[float] = field(default_factory=list)
    last_success: float = 0.0

    def summary(self) -> dict:
        ordered = sorted(self.latencies)

        def percentile(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

        return {
            "requests": len(self.latencies) + len(self.failures),
            "failed": len(self.failures),
            "throughput_rps": round(len(self.latencies) / self.duration, 2) if self.duration else 0.0,
            "p50_s": round(percentile(0.50), 3),
            "p90_s": round(percentile(0.90), 3),
            "p99_s": round(percentile(0.99), 3),
            "mean_s": round(statistics.fmean(ordered), 3) if ordered else float("nan"),
            "failure_samples": self.failures[:5],
        }


def test_images(side: int = 192) -> list[bytes]:
    """JPEGs of a real photo at a few sizes (content photos from ../shared if present, else
    matplotlib's sample photo), so batches mix sizes the way real traffic does."""
    bodies = []
    for photo, scale in itertools.product(content_photos(), (1.0, 0.75)):
        image = Image.open(photo).convert("RGB")
        image.thumbnail((int(side * scale), int(side * scale)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        bodies.append(buffer.getvalue())
    return bodies


def run_load(url: str, styles: list[str], concurrency: int, duration: float, max_requests: int,
             on_tick=None) -> LoadResult:
    """``concurrency`` clients post back to back until ``duration`` or ``max_requests``."""
    bodies = test_images()
    result = LoadResult()
    counter = itertools.count()
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + duration

    def client(worker: int) -> None:
        session = requests.Session()
        for n in counter:
            now = time.monotonic()
            if now >= deadline or n >= max_requests:
                return
            if on_tick is not None:
                on_tick(now - started)
            style = styles[(n + worker) % len(styles)]
            body = bodies[n % len(bodies)]
            t0 = time.monotonic()
            try:
                response = session.post(f"{url}/predictions/{style}", data=body,
                                        headers={"Content-Type": "image/jpeg"}, timeout=120)
                ok = response.status_code == 200 and response.content[:4] == b"\x89PNG"
                reason = f"{response.status_code} {response.text[:120]}" if not ok else ""
            except requests.RequestException as error:
                ok, reason = False, f"{type(error).__name__}: {error}"
            elapsed = time.monotonic() - t0
            with lock:
                if ok:
                    result.latencies.append(elapsed)
                    result.last_success = time.monotonic() - started
                else:
                    result.failures.append(reason)
                    result.failure_times.append(time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    result.duration = time.monotonic() - started
    return result


def server_rss(java_pid: int) -> int:
    """Resident bytes of TorchServe: the Java frontend plus every worker process."""
    process = psutil.Process(java_pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def worker_pids(management_url: str, style: str) -> list[int]:
    described = requests.get(f"{management_url}/models/{style}", timeout=10).json()
    return [int(w["pid"]) for w in described[0]["workers"] if w.get("pid")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an already running server (default: start one on free ports)")
    parser.add_argument("--styles", nargs="+", default=["udnie", "wave", "scream"])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--kill-worker-at", type=float, help="seconds into the run to kill one worker")
    args = parser.parse_args(argv)
    if args.url:
        result = run_load(args.url, args.styles, args.concurrency, args.duration, args.max_requests)
        print(json.dumps(result.summary(), indent=1))
        return 1 if result.failures else 0

    import tempfile

    from server.launch import Server, free_ports

    with tempfile.TemporaryDirectory() as runtime:
        server = Server(Path(runtime), ROOT / "model_store", free_ports())
        server.start()
        try:
            server.wait_ready()
            report = measure(server, args.styles, args.concurrency, args.duration, args.max_requests,
                             args.kill_worker_at)
        finally:
            server.stop()
    print(json.dumps(report, indent=1))
    return 1 if report["failed"] > report.get("allowed_failures", 0) else 0


def java_pid(server) -> int:
    return int((server.runtime_dir / "tmp" / ".model_server.pid").read_text())


def measure(server, styles: list[str], concurrency: int, duration: float, max_requests: int,
            kill_worker_at: float | None = None) -> dict:
    """Warm-up, RSS, the load run (optionally killing a worker), RSS again."""
    run_load(server.inference_url, styles, concurrency, duration=min(10.0, duration / 4), max_requests=4 * concurrency)
    pid = java_pid(server)
    rss_warm = server_rss(pid)
    killed: dict = {}

    def maybe_kill(elapsed: float) -> None:
        if kill_worker_at is not None and not killed and elapsed >= kill_worker_at:
            victim = worker_pids(server.management_url, styles[0])[0]
            killed.update(pid=victim, at=round(elapsed, 2))
            os.kill(victim, signal.SIGKILL)

    result = run_load(server.inference_url, styles, concurrency, duration, max_requests, maybe_kill)
    report = result.summary()
    report.update(
        concurrency=concurrency,
        duration_s=round(result.duration, 1),
        rss_after_warmup_mb=round(rss_warm / 2**20, 1),
        rss_at_end_mb=round(server_rss(pid) / 2**20, 1),
    )
    if killed:
        report["killed_worker"] = killed
        report["failure_times_s"] = [round(t, 2) for t in result.failure_times]
        report["last_success_s"] = round(result.last_success, 2)
        # Only requests the dead worker held (its batch: up to batchSize) may fail.
        report["allowed_failures"] = 4
    return report


if __name__ == "__main__":
    sys.exit(main())
