"""End to end through a real TorchServe: JPEG in, PNG out, against the bare model.

The server is started on free loopback ports with a model store holding one style, so the
numbers are that style's worker and nothing else. Two configurations run side by side:
``auto`` (the stylizer's measured engine choice, every core) and ``before`` (ONNX Runtime
fp32 on half the cores: the settings this project served with until the runtime choice).
The yardstick is the bare model as a user would run it: ONNX Runtime fp32 with every core
on the pixels the handler decodes from the same JPEG. The ratio of served latency to it is
what a user sees.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnxruntime as ort
import requests

from bench.load import java_pid, server_rss
from bench.model_speed import onnx_path, summarize
from core import codec
from core.onnx_session import session_options
from core.paths import MODEL_STORE
from core.photos import photo
from server.launch import Server, free_ports

JPEG = {"Content-Type": "image/jpeg", "Accept": "image/png"}
PNG_SIGNATURE = b"\x89PNG"
#: Environment of each configuration's server.
HALF = str(max(1, (os.cpu_count() or 1) // 2))
CONFIGURATIONS = {
    "auto": {},
    "auto-half-cores": {"STYLE_THREADS": HALF},
    "before": {"STYLE_BACKEND": "onnxruntime", "STYLE_PRECISION": "fp32", "STYLE_THREADS": HALF},
}
#: Styles served side by side for the mixed level (four clients, each its own style's worker).
MIXED_STYLES = ("udnie", "wave", "scream", "la_muse")


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
    return _post(url, body)[0]


def _post(url: str, body: bytes) -> tuple[float, str]:
    t0 = time.perf_counter()
    response = requests.post(url, data=body, headers=JPEG, timeout=600)
    elapsed = time.perf_counter() - t0
    if response.status_code != 200 or response.content[:4] != PNG_SIGNATURE:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    return elapsed, response.headers.get("X-Style-Runtime", "?")


def at_concurrency(url: str | list[str], body: bytes, concurrency: int, total: int) -> dict:
    """``total`` requests from ``concurrency`` clients posting back to back; with a list of
    URLs, request ``i`` goes to ``url[i % len(url)]`` (clients spread over styles)."""
    urls = url if isinstance(url, list) else [url]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(lambda i: post(urls[i % len(urls)], body), range(total)))
    wall = time.perf_counter() - started
    mixed = {"styles": len(urls)} if len(urls) > 1 else {}
    return {"concurrency": concurrency, "requests": total, "images_per_s": total / wall, **mixed,
            **summarize(latencies)}


def bare_model(style: str, body: bytes, runs: int, threads: int) -> dict:
    """ONNX Runtime fp32 alone with ``threads`` threads, on the pixels the handler decodes."""
    session = ort.InferenceSession(str(onnx_path(style, "ort_fp32")), sess_options=session_options(threads),
                                   providers=["CPUExecutionProvider"])
    x = codec.to_array(codec.decode(body))[None]
    session.run(None, {"image": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {"image": x})
        times.append(time.perf_counter() - t0)
    return {"threads": threads, **summarize(times)}


def _serve(store: Path, runtime: Path, env: dict[str, str]) -> Server:
    server = Server(runtime, store, free_ports(), env={"STYLE_RUNTIME_DIR": str(runtime / "choice"), **env})
    server.start()
    server.wait_ready()
    return server


def end_to_end(style: str, sizes: list[tuple[int, int]], runs: int, concurrency: list[int]) -> dict:
    """Each configuration's served latency and throughput per size, with the bare model's:
    ``style`` alone at each concurrency, then four clients each on its own style's worker."""
    threads = os.cpu_count() or 1
    configurations = {}
    with tempfile.TemporaryDirectory() as runtime:
        store = Path(runtime) / "store"
        store.mkdir()
        styles = list(dict.fromkeys([style, *MIXED_STYLES]))
        for served in styles:
            (store / f"{served}.mar").symlink_to(MODEL_STORE / f"{served}.mar")
        for name, env in CONFIGURATIONS.items():
            started = time.perf_counter()
            server = _serve(store, Path(runtime) / name, env)
            ready_s = time.perf_counter() - started
            try:
                url = f"{server.inference_url}/predictions/{style}"
                rows = []
                with PeakRss(java_pid(server)) as rss:
                    for height, width in sizes:
                        body = jpeg_of(height, width)
                        _, served_by = _post(url, body)  # warm-up: arena growth for this size
                        post(url, body)
                        levels = [at_concurrency(url, body, c, runs * c) for c in concurrency]
                        mixed = [f"{server.inference_url}/predictions/{s}" for s in styles[:4]]
                        levels.append(at_concurrency(mixed, body, len(mixed), runs * len(mixed)))
                        rows.append({"size": f"{width}x{height}", "jpeg_bytes": len(body), "runtime": served_by,
                                     "levels": levels})
            finally:
                server.stop()
            configurations[name] = {"env": env, "server_ready_s": ready_s, "peak_rss_mb": rss.peak / 2**20,
                                    "sizes": rows}
    for i, (height, width) in enumerate(sizes):
        bare = bare_model(style, jpeg_of(height, width), runs, threads)
        for config in configurations.values():
            row = config["sizes"][i]
            single = next(level for level in row["levels"] if level["concurrency"] == 1)
            row["bare_ort_fp32"] = bare
            row["ratio_to_bare"] = single["median_s"] / bare["median_s"]
    return {"style": style, "configurations": configurations, "bare_threads": threads,
            "statistic": f"median and p90 of {runs}×concurrency requests after 2 warm-ups"}


def all_models_rss(settle_s: float = 5.0) -> dict:
    """Resident memory of the server with every built archive loaded and idle, per configuration."""
    found = {}
    with tempfile.TemporaryDirectory() as runtime:
        for name, env in CONFIGURATIONS.items():
            started = time.perf_counter()
            server = _serve(MODEL_STORE, Path(runtime) / name, env)
            try:
                ready_s = time.perf_counter() - started
                time.sleep(settle_s)
                models = sorted(json.loads(requests.get(f"{server.management_url}/models", timeout=30).text)
                                ["models"], key=lambda m: m["modelName"])
                found[name] = {"rss_mb": server_rss(java_pid(server)) / 2**20, "ready_s": ready_s,
                               "models": [m["modelName"] for m in models]}
            finally:
                server.stop()
    return found
