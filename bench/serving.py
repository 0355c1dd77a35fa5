"""End to end through a real TorchServe: JPEG in, JPEG out, against the bare model on the same image.

The server is started on free loopback ports with a model store holding one style, so the
numbers are that style's worker and nothing else. The bare-model time uses the session
settings the handler uses (same thread count), on the pixels the handler decodes from the
same JPEG: the ratio of the two is what TorchServe, HTTP and the codec add.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnxruntime as ort
import requests

from bench.load import java_pid, server_rss
from bench.model_speed import onnx_path, summarize
from bench.photos import ROOT, photo
from core import codec
from core.onnx_session import session_options
from export.__main__ import FAST_MODEL_CONFIG
from server.launch import Server, free_ports

JPEG = {"Content-Type": "image/jpeg", "Accept": "image/jpeg"}


class PeakRss:
    """Samples the server's resident memory (frontend + workers) in the background."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, server_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def jpeg_of(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    photo(height, width).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(url: str, body: bytes) -> float:
    t0 = time.perf_counter()
    response = requests.post(url, data=body, headers=JPEG, timeout=600)
    elapsed = time.perf_counter() - t0
    if response.status_code != 200 or response.content[:2] != b"\xff\xd8":
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    return elapsed


def at_concurrency(url: str, body: bytes, concurrency: int, total: int) -> dict:
    """``total`` requests from ``concurrency`` clients posting back to back."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(lambda _: post(url, body), range(total)))
    wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": total, "images_per_s": total / wall, **summarize(latencies)}


def bare_model(style: str, body: bytes, runs: int) -> dict:
    """The handler's network call alone, same settings, same decoded pixels."""
    threads = int(FAST_MODEL_CONFIG["handler"]["intra_op_threads"])
    session = ort.InferenceSession(str(onnx_path(style, "ort_fp32")), sess_options=session_options(threads),
                                   providers=["CPUExecutionProvider"])
    x = codec.to_array(codec.decode(body))[None]
    session.run(None, {"image": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {"image": x})
        times.append(time.perf_counter() - t0)
    return {"intra_op_threads": session_options(threads).intra_op_num_threads, **summarize(times)}


def end_to_end(style: str, sizes: list[tuple[int, int]], runs: int, concurrency: list[int]) -> dict:
    with tempfile.TemporaryDirectory() as runtime:
        store = Path(runtime) / "store"
        store.mkdir()
        (store / f"{style}.mar").symlink_to(ROOT / "model_store" / f"{style}.mar")
        server = Server(Path(runtime) / "server", store, free_ports())
        started = time.perf_counter()
        server.start()
        try:
            server.wait_ready()
            ready_s = time.perf_counter() - started
            url = f"{server.inference_url}/predictions/{style}"
            rows = []
            with PeakRss(java_pid(server)) as rss:
                for height, width in sizes:
                    body = jpeg_of(height, width)
                    for _ in range(2):
                        post(url, body)  # warm-up: arena growth for this size
                    levels = [at_concurrency(url, body, c, runs * c) for c in concurrency]
                    bare = bare_model(style, body, runs)
                    single = next(level for level in levels if level["concurrency"] == 1)
                    rows.append({"size": f"{width}x{height}", "jpeg_bytes": len(body), "bare_model": bare,
                                 "levels": levels, "overhead_ratio": single["median_s"] / bare["median_s"]})
        finally:
            server.stop()
    return {"style": style, "server_ready_s": ready_s, "server_peak_rss_mb": rss.peak / 2**20, "sizes": rows,
            "threads_note": "one worker, intra-op threads = half the cores (config: intra_op_threads 0)",
            "statistic": f"median and p90 of {runs}×concurrency requests after 2 warm-ups"}
