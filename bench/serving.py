"""End to end through a real TorchServe, against the bare model; and how fast a server is ready.

The servers run the built archives with this checkout's code (``bench.load.checkout_store``),
on free loopback ports, one worker per model. ``end_to_end`` serves one style (and the three
others of ``MIXED_STYLES``) in each configuration:

- ``auto``: the stylizer's measured engine choice, every core per worker (the shipped setting);
- ``auto-1-thread``: the same choice with one intra-op thread per worker, to choose the thread
  count by measurement (one request at a time wants every core; four at once may not);
- ``before``: ONNX Runtime fp32 on one thread (the settings served before the runtime choice).

Per size: one client posting a JPEG and asking for a PNG, then for a JPEG (the encoder's
share); ``concurrency`` clients (PNG); four clients each on its own style's worker. The
yardstick is the bare model as a user would run it: ONNX Runtime fp32 with every core on the
pixels the handler decodes from the same JPEG. ``cold_start`` serves every built model twice
from one runtime folder: first empty (each worker measures its engine choice), then warm
(each finds its choice cached), timing when each model is ready, and the idle server's RSS.

``request_stages`` says where a served request's time goes: in this process, on the engine an
``auto`` worker chooses (the same settings, chosen once in a runtime folder of its own), the
decoder, the network alone, the rest of painting (array conversions, finishing) and the PNG
encoder, timed when the bare model is and kept the same way (each stage's fastest median);
what the served median has beyond their sum is TorchServe and HTTP.

The machine's load average is recorded beside each figure: a machine shared with other work
slows every served figure, and the ratios only mean something beside it.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnxruntime as ort
import requests

from bench.load import PeakRss, checkout_store, java_pid, server_rss
from bench.model_speed import onnx_path, summarize
from core import codec
from core.onnx_session import session_options
from core.paths import ONNX_DIR
from core.photos import photo
from core.stylizer import Stylizer
from server.launch import Server, free_ports
from stylize.batch import Options

#: What each output format's reply starts with.
SIGNATURES = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff"}
#: Environment of each configuration's server.
CONFIGURATIONS = {
    "auto": {},
    "auto-1-thread": {"STYLE_THREADS": "1"},
    "before": {"STYLE_BACKEND": "onnxruntime", "STYLE_PRECISION": "fp32", "STYLE_THREADS": "1"},
}
#: Styles served side by side for the mixed level (four clients, each its own style's worker).
MIXED_STYLES = ("udnie", "wave", "scream", "la_muse")
#: Seconds a server may take to have every model ready: nine models on two busy cores,
#: each measuring its engine choice when the runtime folder is empty.
READY_TIMEOUT_S = 900


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def jpeg_of(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    photo(height, width).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(url: str, body: bytes, fmt: str = "png") -> tuple[float, str]:
    """Seconds for one JPEG ``body`` painted and returned as ``fmt``, and the engine that ran it."""
    started = time.perf_counter()
    response = requests.post(url, data=body, headers={"Content-Type": "image/jpeg", "Accept": f"image/{fmt}"},
                             timeout=600)
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or not response.content.startswith(SIGNATURES[fmt]):
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    return elapsed, response.headers.get("X-Style-Runtime", "?")


def at_concurrency(url: str | list[str], body: bytes, concurrency: int, total: int, fmt: str = "png") -> dict:
    """``total`` requests from ``concurrency`` clients posting back to back; with a list of
    URLs, request ``i`` goes to ``url[i % len(url)]`` (clients spread over styles)."""
    urls = url if isinstance(url, list) else [url]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = [seconds for seconds, _ in pool.map(lambda i: post(urls[i % len(urls)], body, fmt), range(total))]
    wall = time.perf_counter() - started
    mixed = {"styles": len(urls)} if len(urls) > 1 else {}
    return {"concurrency": concurrency, "format": fmt, "requests": total, "images_per_s": total / wall, **mixed,
            **summarize(latencies)}


def bare_model(style: str, body: bytes, runs: int, threads: int) -> dict:
    """ONNX Runtime fp32 alone with ``threads`` threads, on the pixels the handler decodes."""
    session = ort.InferenceSession(str(onnx_path(style, "ort_fp32")), sess_options=session_options(threads),
                                   providers=["CPUExecutionProvider"])
    x = codec.to_array(codec.decode(body))[None]
    return {"threads": threads, **summarize(_times(lambda: session.run(None, {"image": x}), runs))}


def _times(work: Callable[[], object], runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls of ``work``, after one untimed call (the warm-up)."""
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def _median_s(work: Callable[[], object], runs: int) -> float:
    return summarize(_times(work, runs))["median_s"]


def request_stages(style: str, body: bytes, runs: int, choice_dir: Path) -> dict:
    """Median seconds of each stage of a default request (JPEG in, PNG out), in process on the
    engine chosen (or found cached) in ``choice_dir``."""
    stylizer = Stylizer(ONNX_DIR / f"{style}.onnx", cache=choice_dir)
    params = Options().params()
    picture = codec.decode(body)
    batch = codec.to_array(picture)[None]
    painting = stylizer.paint([picture], [params])[0]
    network = _median_s(lambda: stylizer.run(batch), runs)
    return {"runtime": stylizer.runtime, "decode_s": _median_s(lambda: codec.decode(body), runs),
            "network_s": network,
            "finishing_s": max(0.0, _median_s(lambda: stylizer.paint([picture], [params]), runs) - network),
            "png_s": _median_s(lambda: codec.encode(painting, "png"), runs)}


def _served_size(server: Server, style: str, styles: list[str], body: bytes, runs: int,
                 concurrency: list[int]) -> dict:
    """One size on one server: c=1 PNG and JPEG out, each concurrency, four styles at once."""
    url = f"{server.inference_url}/predictions/{style}"
    _, served_by = post(url, body)  # warm-up: arena growth for this size
    post(url, body, "jpeg")
    levels = [at_concurrency(url, body, 1, runs, "jpeg")]
    levels += [at_concurrency(url, body, c, runs * c) for c in concurrency]
    mixed = [f"{server.inference_url}/predictions/{s}" for s in styles[:4]]
    levels.append(at_concurrency(mixed, body, len(mixed), runs * len(mixed)))
    png, jpeg = _level(levels, 1, "png"), _level(levels, 1, "jpeg")
    return {"runtime": served_by, "jpeg_bytes": len(body), "levels": levels,
            "png_over_jpeg": png["median_s"] / jpeg["median_s"]}


def _level(levels: list[dict], concurrency: int, fmt: str) -> dict:
    return next(x for x in levels if x["concurrency"] == concurrency and x["format"] == fmt and "styles" not in x)


def end_to_end(style: str, sizes: list[tuple[int, int]], runs: int, concurrency: list[int]) -> dict:
    """Each configuration's served latency and throughput per size, with the bare model's.

    The bare model is timed before the first server and after each one stops, and the
    fastest of those timings is the yardstick: other work on the machine can only slow a
    measurement, and a slowed yardstick would flatter every served ratio."""
    threads = os.cpu_count() or 1
    styles = list(dict.fromkeys([style, *MIXED_STYLES]))
    bodies = [jpeg_of(height, width) for height, width in sizes]
    bare = [[bare_model(style, body, runs, threads)] for body in bodies]
    configurations = {}
    with tempfile.TemporaryDirectory() as folder:
        choice_dir = Path(folder) / "stages-choice"
        stages = [[request_stages(style, body, runs, choice_dir)] for body in bodies]
        store = checkout_store(Path(folder) / "store", styles)
        for name, env in CONFIGURATIONS.items():
            load_before = load_average()
            server = Server(Path(folder) / name, store, free_ports(),
                            env={"STYLE_RUNTIME_DIR": str(Path(folder) / name / "choice"), **env})
            try:
                ready_s = max(start_timed(server).values())
                with PeakRss(java_pid(server)) as rss:
                    rows = [{"size": f"{width}x{height}",
                             **_served_size(server, style, styles, body, runs, concurrency)}
                            for (height, width), body in zip(sizes, bodies, strict=True)]
            finally:
                server.stop()
            configurations[name] = {"env": env, "server_ready_s": ready_s, "peak_rss_mb": rss.peak / 2**20,
                                    "load_average": {"before": load_before, "after": load_average()},
                                    "sizes": rows}
            for timings, stage_timings, body in zip(bare, stages, bodies, strict=True):
                timings.append(bare_model(style, body, runs, threads))
                stage_timings.append(request_stages(style, body, runs, choice_dir))
    for i, timings in enumerate(bare):
        fastest = {**min(timings, key=lambda t: t["median_s"]), "medians_s": [t["median_s"] for t in timings]}
        for config in configurations.values():
            row = config["sizes"][i]
            row["bare_ort_fp32"] = fastest
            row["ratio_to_bare"] = _level(row["levels"], 1, "png")["median_s"] / fastest["median_s"]
        if "auto" in configurations:
            keys = [key for key in stages[i][0] if key.endswith("_s")]
            configurations["auto"]["sizes"][i]["stages"] = {
                "runtime": stages[i][0]["runtime"], **{key: min(t[key] for t in stages[i]) for key in keys}}
    return {"style": style, "configurations": configurations, "bare_threads": threads,
            "statistic": f"median and p90 of {runs}×concurrency requests after 2 warm-ups; the bare model: "
                         f"the fastest median of {runs} runs, timed before the first server and after each"}


def start_timed(server: Server) -> dict[str, float]:
    """Starts ``server`` and waits for every model: seconds from the start until each was ready."""
    started = time.perf_counter()
    ready: dict[str, float] = {}

    def seen(model: str) -> None:
        ready[model] = round(time.perf_counter() - started, 1)

    server.start()
    server.wait_ready(READY_TIMEOUT_S, on_ready=seen, poll_s=0.5)
    return ready


def cold_start(settle_s: float = 5.0) -> dict:
    """Every built model served from an empty runtime folder, then from the same folder again:
    seconds until each model is ready, and the idle server's RSS (the warm run's)."""
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        store = checkout_store(Path(folder) / "store")
        choices = Path(folder) / "choice"  # shared by both runs: the second finds every choice cached
        for name in ("cold", "warm"):
            load_before = load_average()
            server = Server(Path(folder) / name, store, free_ports(), env={"STYLE_RUNTIME_DIR": str(choices)})
            try:
                ready = start_timed(server)
                time.sleep(settle_s)
                models = requests.get(f"{server.management_url}/models", timeout=30).json()["models"]
                found[name] = {"ready_s": max(ready.values()), "ready_per_model_s": ready,
                               "rss_mb": server_rss(java_pid(server)) / 2**20,
                               "models": sorted(m["modelName"] for m in models),
                               "load_average": {"before": load_before, "after": load_average()}}
            finally:
                server.stop()
    return found


#: ``python -m bench`` stores it as ``serving.all_models``.
all_models_rss = cold_start


if __name__ == "__main__":  # the served part alone: python -m bench.serving
    print(json.dumps({"end_to_end": end_to_end("udnie", [(512, 512)], 4, [1, 4]), "cold_start": cold_start()},
                     indent=1))
