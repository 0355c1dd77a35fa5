"""Load, burst and worker-kill runs against a real TorchServe: bounded in time, loopback only.

    .venv/bin/python -m bench.load                        # steady load: 60 s, concurrency 4
    .venv/bin/python -m bench.load --mode burst           # eight 4096x4096 photos at once, 4 styles
    .venv/bin/python -m bench.load --mode kills           # kill a worker in each phase, 3 times each
    .venv/bin/python -m bench.load --mode burst kills     # both (the figures in README, "Operating")
    .venv/bin/python -m bench.load --url http://127.0.0.1:8080 --duration 120
    .venv/bin/python -m bench.load --mode burst --out bench/results/load.json   # kept beside the others

Each mode starts its own server on free loopback ports, serving the built archives with this
checkout's code (``checkout_store``; ``--url`` targets a running one for the steady load
only). Reports answered and unanswered requests, status counts, latency percentiles, the
server's resident memory (peak, sampled), the machine's lowest available memory, its load
average, and workers killed.

``kills`` serves copies of one style archive under test names, with the current code and
changed model configs (``derived_archive``), on a server whose workers load the test-only
pause points (``tests/support/fault_points.py``, a worker plugin), so each kill lands in the
phase it names:

- ``idle``: the worker waits for work; requests arrive while it is dead and restarting;
- ``loading``: the replacement worker is killed inside ``initialize``, requests queued;
- ``admitted``: a request holds its admission slot and is about to run (mid-inference);
- ``gathering``: TorchServe's frontend is collecting a batch (``batchSize`` 4, a long
  ``maxBatchDelay``). With ``batchSize`` 1, which the project ships, this phase does not
  exist; the run shows what it costs when it does (TorchServe 0.12 never answers the
  requests it had gathered: see README, "Operating").
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
import yaml
from PIL import Image

from core import settings
from core.paths import MODEL_STORE, ROOT
from core.photos import content_photos, photo
from server.launch import Server, free_ports
from tests.support import fault_points

#: Seconds a client waits before it calls a request unanswered.
CLIENT_TIMEOUT_S = 400.0


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    duration: float = 0.0
    failure_times: list[float] = field(default_factory=list)
    last_success: float = 0.0

    def summary(self) -> dict:
        ordered = sorted(self.latencies)
        return {
            "requests": len(self.latencies) + len(self.failures),
            "failed": len(self.failures),
            "throughput_rps": round(len(self.latencies) / self.duration, 2) if self.duration else 0.0,
            "p50_s": round(percentile(ordered, 0.50), 3),
            "p90_s": round(percentile(ordered, 0.90), 3),
            "p99_s": round(percentile(ordered, 0.99), 3),
            "mean_s": round(statistics.fmean(ordered), 3) if ordered else float("nan"),
            "failure_samples": self.failures[:5],
        }


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_images(side: int = 192) -> list[bytes]:
    """JPEGs of a real photo at a few sizes (content photos from ../shared if present, else
    matplotlib's sample photo), so batches mix sizes the way real traffic does."""
    bodies = []
    for path, scale in itertools.product(content_photos(), (1.0, 0.75)):
        image = Image.open(path).convert("RGB")
        image.thumbnail((int(side * scale), int(side * scale)))
        bodies.append(jpeg(image))
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


# --- one request, answered or not ---------------------------------------------------------


@dataclass
class Outcome:
    """What one client saw: ``status`` None means no answer within its timeout."""

    style: str
    status: int | None
    seconds: float
    body: dict | None = None
    retry_after: str | None = None
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.status is not None


def post(url: str, style: str, body: bytes, timeout: float = CLIENT_TIMEOUT_S) -> Outcome:
    started = time.monotonic()
    try:
        response = requests.post(f"{url}/predictions/{style}", data=body,
                                 headers={"Content-Type": "image/jpeg"}, timeout=timeout)
    except requests.RequestException as error:
        return Outcome(style, None, time.monotonic() - started, error=f"{type(error).__name__}")
    seconds = time.monotonic() - started
    parsed = None
    if response.headers.get("Content-Type", "").startswith("application/json"):
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
    return Outcome(style, response.status_code, seconds, parsed, response.headers.get("Retry-After"))


def post_in_background(url: str, style: str, body: bytes, timeout: float = CLIENT_TIMEOUT_S):
    """Starts ``post`` in a thread; the returned callable waits for its ``Outcome``."""
    box: list[Outcome] = []
    thread = threading.Thread(target=lambda: box.append(post(url, style, body, timeout)), daemon=True)
    thread.start()

    def result() -> Outcome:
        thread.join()
        return box[0]

    return result


def summarize(outcomes: list[Outcome]) -> dict:
    times = sorted(o.seconds for o in outcomes if o.answered)
    return {
        "requests": len(outcomes),
        "answered": sum(o.answered for o in outcomes),
        "unanswered": sum(not o.answered for o in outcomes),
        "statuses": dict(Counter(str(o.status) for o in outcomes)),
        "p50_s": round(percentile(times, 0.5), 2),
        "p99_s": round(percentile(times, 0.99), 2),
        "max_s": round(times[-1], 2) if times else None,
    }


# --- the server's processes ---------------------------------------------------------------


def java_pid(server) -> int:
    return int((server.runtime_dir / "tmp" / ".model_server.pid").read_text())


def server_rss(java: int) -> int:
    """Resident bytes of TorchServe: the Java frontend plus every worker process."""
    process = psutil.Process(java)
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker that just died
            total += p.memory_info().rss
    return total


class PeakRss:
    """Samples the server's RSS, and the machine's available memory, every ``interval``
    seconds while in the ``with`` block: ``peak`` and ``lowest_available`` bytes."""

    def __init__(self, java: int, interval: float = 0.25):
        self.java, self.interval, self.peak = java, interval, 0
        self.lowest_available = psutil.virtual_memory().available
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, server_rss(self.java))
            self.lowest_available = min(self.lowest_available, psutil.virtual_memory().available)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def worker_pids(management_url: str, style: str) -> list[int]:
    described = requests.get(f"{management_url}/models/{style}", timeout=10).json()
    return [int(w["pid"]) for w in described[0]["workers"] if w.get("pid") and w.get("status") == "READY"]


def wait_workers(management_url: str, style: str, count: int = 1, exclude: set[int] = frozenset(),
                 timeout: float = 120) -> list[int]:
    """Waits until ``count`` READY workers of ``style`` (none of them in ``exclude``) are up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = [p for p in worker_pids(management_url, style) if p not in exclude]
            if len(pids) >= count:
                return pids
        except (requests.RequestException, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{style}: {count} fresh READY worker(s) not up within {timeout:.0f}s")


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def wait_noticed(management_url: str, style: str, pid: int, timeout: float = 30) -> None:
    """Waits until TorchServe no longer lists ``pid`` as a READY worker of ``style``."""
    deadline = time.monotonic() + timeout
    while pid in worker_pids(management_url, style):
        if time.monotonic() > deadline:
            raise TimeoutError(f"TorchServe still lists killed worker {pid} of {style} as READY")
        time.sleep(0.02)


# --- archives for test servers ---------------------------------------------------------------


def fast_model_config() -> dict:
    """The model config every fast-style archive ships (export's ``FAST_MODEL_CONFIG``)."""
    from export.models import FAST_MODEL_CONFIG

    return copy.deepcopy(FAST_MODEL_CONFIG)


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


#: What every test-server model changes from the shipped config: one engine (no measuring
#: of candidates at load) and time to load when several workers start at once on 2 cores.
TEST_SERVER_CONFIG = {"startupTimeout": 300, "handler": {"backend": "onnxruntime", "precision": "fp32"}}


def derived_archive(source: Path, out_dir: Path, name: str, overrides: dict) -> Path:
    """A copy of archive ``source`` served as ``name``: the shipped fast-style config with
    ``TEST_SERVER_CONFIG`` and ``overrides`` merged in, and this checkout's code, so a test
    server runs the code and settings under test whatever the built archive holds."""
    config = _merge(_merge(fast_model_config(), TEST_SERVER_CONFIG), overrides)
    return checkout_archive(source, out_dir, name, config)


def checkout_archive(source: Path, out_dir: Path, name: str | None = None, config: dict | None = None) -> Path:
    """A copy of archive ``source`` (served as ``name``, default its own) running this
    checkout's code: each Python package it carries (``core``, ``optimize``, ...) and its
    handler come from the checkout, whole, so a module added since the build is there too.
    ``config``: its model config instead of the archive's own. The benchmarks serve these,
    so their figures are the code's under test, not the last build's."""
    name = name or source.stem
    target = out_dir / f"{name}.mar"
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy_:
        manifest = json.loads(original.read("MAR-INF/MANIFEST.json"))
        config_name, handler_name = manifest["model"]["configFile"], manifest["model"]["handler"]
        manifest["model"]["modelName"] = name
        packages = {item.split("/")[0] for item in original.namelist()
                    if item.endswith(".py") and "/" in item and (ROOT / item.split("/")[0]).is_dir()}
        for item in original.infolist():
            replaced = (handler_name, "MAR-INF/MANIFEST.json", *([config_name] if config is not None else []))
            if item.filename.split("/")[0] in packages or item.filename in replaced:
                continue
            copy_.writestr(item, original.read(item.filename))
        copy_.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest, indent=2))
        if config is not None:
            copy_.writestr(config_name, yaml.safe_dump(config, sort_keys=False))
        copy_.write(ROOT / "handlers" / handler_name, handler_name)
        for package in sorted(packages):
            for path in sorted((ROOT / package).rglob("*.py")):
                copy_.write(path, str(path.relative_to(ROOT)))
    return target


def checkout_store(out_dir: Path, names: list[str] | None = None) -> Path:
    """A model store of the built archives (``names``, default all) with this checkout's code."""
    for source in sorted(MODEL_STORE.glob("*.mar")):
        if names is None or source.stem in names:
            checkout_archive(source, out_dir)
    return out_dir


@contextlib.contextmanager
def serving(folder: Path, env: dict[str, str] | None = None, store: Path | None = None) -> Iterator[Server]:
    """A ready server on free loopback ports in ``folder``: every built model with this
    checkout's code (or the archives in ``store``); stopped on leaving."""
    server = Server(folder / "server", store or checkout_store(folder / "store"), free_ports(), env=env)
    server.start()
    try:
        server.wait_ready(timeout=900)  # nine models loading on 2 busy cores
        yield server
    finally:
        server.stop()


# --- kills in each phase ---------------------------------------------------------------------

#: Test-server models for the kill runs, as overrides of the style's shipped config.
#: Small photos only (``max_pixels``), so a short responseTimeout passes admission's start-up check.
KILL_MODELS = {
    "one": {"responseTimeout": 60, "handler": {"max_pixels": 512 * 512}},
    "batched": {"batchSize": 4, "maxBatchDelay": 5000, "responseTimeout": 60, "handler": {"max_pixels": 512 * 512}},
}


def kill_idle(server, model: str, body: bytes, clients: int = 2, timeout: float = 60) -> list[Outcome]:
    """Kills the idle worker, then sends ``clients`` requests while it is dead/restarting."""
    [victim] = wait_workers(server.management_url, model)
    kill(victim)
    wait_noticed(server.management_url, model, victim)
    pending = [post_in_background(server.inference_url, model, body, timeout) for _ in range(clients)]
    outcomes = [wait() for wait in pending]
    wait_workers(server.management_url, model, exclude={victim})
    return outcomes


def _kill_when_paused(server, model: str, body: bytes, holds: Path, phase: str,
                      trigger: Callable[[int], list[Callable[[], Outcome]]], clients: int,
                      timeout: float) -> list[Outcome]:
    """Arms pause point ``phase``; ``trigger(worker)`` brings a worker there (returning the
    requests it sent); ``clients`` more requests queue behind it; the paused worker is
    killed; every answer is collected once a fresh worker is up."""
    [worker] = wait_workers(server.management_url, model)
    fault_points.hold(holds, model, phase)
    try:
        pending = trigger(worker)
        victim = fault_points.wait_paused(holds, model, phase)
        pending += [post_in_background(server.inference_url, model, body, timeout) for _ in range(clients)]
        time.sleep(0.3)  # let the requests reach TorchServe's queue
        kill(victim)
    finally:
        fault_points.release(holds, model, phase)
    outcomes = [wait() for wait in pending]
    wait_workers(server.management_url, model, exclude={worker, victim})
    return outcomes


def kill_loading(server, model: str, body: bytes, holds: Path, clients: int = 2,
                 timeout: float = 90) -> list[Outcome]:
    """Kills the replacement worker inside ``initialize`` with requests queued for it."""

    def kill_the_worker(worker: int) -> list[Callable[[], Outcome]]:
        kill(worker)  # its replacement pauses while loading
        return []

    return _kill_when_paused(server, model, body, holds, "loading", kill_the_worker, clients, timeout)


def kill_admitted(server, model: str, body: bytes, holds: Path, clients: int = 2,
                  timeout: float = 60) -> list[Outcome]:
    """Kills the worker while one request holds its admission slot and others queue behind."""

    def send_one(worker: int) -> list[Callable[[], Outcome]]:
        return [post_in_background(server.inference_url, model, body, timeout)]  # it pauses once admitted

    return _kill_when_paused(server, model, body, holds, "admitted", send_one, clients - 1, timeout)


def kill_gathering(server, model: str, body: bytes, timeout: float = 15) -> list[Outcome]:
    """Kills the worker while the frontend holds a request it is gathering a batch around
    (``model`` must have ``batchSize`` > 1 and a ``maxBatchDelay`` of seconds)."""
    [victim] = wait_workers(server.management_url, model)
    pending = post_in_background(server.inference_url, model, body, timeout)
    time.sleep(1.0)  # well inside the maxBatchDelay: the request sits in the frontend's batch
    kill(victim)
    outcome = pending()
    wait_workers(server.management_url, model, exclude={victim})
    return [outcome]


def kills(rounds: int = 3) -> dict:
    """``rounds`` kills in each phase, on a server of the ``KILL_MODELS`` (copies of ``wave``)
    with its pause points armed; per phase: statuses, answered/unanswered, times."""
    body = jpeg(photo(96, 128))
    report: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        runtime, holds = Path(folder), Path(folder) / "holds"
        holds.mkdir()
        store = runtime / "store"
        for name, overrides in KILL_MODELS.items():
            derived_archive(MODEL_STORE / "wave.mar", store, name, overrides)
        with serving(runtime, fault_points.worker_env(holds), store) as server:
            phases = {
                "idle": lambda: kill_idle(server, "one", body),
                "loading": lambda: kill_loading(server, "one", body, holds),
                "admitted": lambda: kill_admitted(server, "one", body, holds),
                "gathering (batchSize 4, not shipped)": lambda: kill_gathering(server, "batched", body),
            }
            for phase, run in phases.items():
                outcomes = [o for _ in range(rounds) for o in run()]
                report[phase] = summarize(outcomes)
    return report


# --- a burst of large photos ------------------------------------------------------------------


def burst(count: int = 8, side: int = 4096, styles: tuple[str, ...] = ("la_muse", "scream", "udnie", "wave")) -> dict:
    """``count`` concurrent ``side``-square photos over ``styles`` on a fresh server. Each style
    first paints one 1024² photo alone, as a server that has served has: admission's cost
    then rests on an observed time, not only the runtime choice's measurement."""
    bodies = [jpeg(photo(side, side, index=i), quality=92) for i in range(count)]
    with tempfile.TemporaryDirectory() as folder, serving(Path(folder)) as server:
        models = sorted(p.stem for p in server.model_store.glob("*.mar"))
        for style in styles:
            post(server.inference_url, style, jpeg(photo(1024, 1024, index=count)))
        before = {m: set(worker_pids(server.management_url, m)) for m in models}
        java = java_pid(server)
        idle_rss = server_rss(java)
        log_path = server.log_dir / "ts_log.log"
        log_start = log_path.stat().st_size  # count only what the burst logs, not slow loads before it
        load_before = os.getloadavg()
        with PeakRss(java) as rss, ThreadPoolExecutor(max_workers=count) as pool:
            jobs = [pool.submit(post, server.inference_url, styles[i % len(styles)], body)
                    for i, body in enumerate(bodies)]
            outcomes = [job.result() for job in jobs]
        after = {m: set(worker_pids(server.management_url, m)) for m in models}
        with log_path.open("rb") as log_file:
            log_file.seek(log_start)
            log = log_file.read().decode(errors="replace")
        small = post(server.inference_url, styles[0], jpeg(photo(192, 256)), timeout=60)
    report = summarize(outcomes)
    report.update(
        count=count,
        side=side,
        painted=sum(o.status == 200 for o in outcomes),
        refused_503=sum(o.status == 503 for o in outcomes),
        retry_after=[o.retry_after for o in outcomes if o.status == 503],
        reasons=dict(Counter(o.body.get("reason") for o in outcomes if o.status == 503 and o.body)),
        seconds=[round(o.seconds, 1) for o in outcomes],
        workers_killed=sum(len(before[m] - after[m]) for m in models),
        worker_died_in_log=log.count("Worker died") + log.count("did not respond in given time"),
        idle_rss_gib=round(idle_rss / 2**30, 2),
        peak_rss_gib=round(rss.peak / 2**30, 2),
        lowest_available_gib=round(rss.lowest_available / 2**30, 2),
        load_average={"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        next_small_request=small.status,
    )
    return report


# --- the admission cost constants -------------------------------------------------------------


def calibrate(side: int = 4096, style: str = "wave") -> dict:
    """What one ``side``-square photo costs the fast-style handler on this machine, in the units
    of ``core.admission.Settings`` (measured in a fresh process, so its peak RSS is this photo's)."""
    import subprocess

    code = f"from bench.load import _calibrate_here; _calibrate_here({side}, {style!r})"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def _calibrate_here(side: int, style: str) -> None:
    import resource

    import ts
    from ts.context import Context, RequestProcessor
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    from core import admission
    from handlers.fast_style import FastStyleHandler

    with zipfile.ZipFile(ROOT / "model_store" / f"{style}.mar") as mar, tempfile.TemporaryDirectory() as folder:
        mar.extractall(folder)
        manifest = json.loads((Path(folder) / "MAR-INF" / "MANIFEST.json").read_text())
        config = yaml.safe_load((Path(folder) / manifest["model"]["configFile"]).read_text())
        context = Context(style, folder, manifest, 1, None, "0.12.0", model_yaml_config=config)
        # The handler's metric calls need TorchServe's metrics cache, as a worker has.
        context.metrics = MetricsCacheYamlImpl(str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
        context.metrics.initialize_cache()
        handler = FastStyleHandler()
        handler.initialize(context)
        body = jpeg(photo(side, side), quality=92)
        # Warm-up, tiled so the tiler is built before the measured run (a first large photo pays for it).
        context.request_processor = [RequestProcessor({"body": {"content-type": "image/jpeg"}, "X-Tile": "true"})]
        handler.handle([{"body": jpeg(photo(1024, 1024))}], context)
        context.request_processor = [RequestProcessor({"body": {"content-type": "image/jpeg"}})]
        before = psutil.Process().memory_info().rss
        started = time.perf_counter()
        [painted] = handler.handle([{"body": body}], context)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert bytes(painted[:4]) == b"\x89PNG", painted[:200]
    door = handler.service.admission
    threads = door.threads
    megapixels = side * side / 1e6
    print(json.dumps({
        "side": side,
        "seconds": round(seconds, 1),
        "threads": threads,
        "runtime": handler.service.runtime,
        "core_seconds_per_megapixel": round(seconds * threads / megapixels, 2),
        "bytes_per_pixel": round((peak - before) / (side * side)),
        "settings_now": {"core_seconds_per_megapixel": admission.Settings.core_seconds_per_megapixel,
                         "bytes_per_pixel": admission.Settings.bytes_per_pixel},
        "runtime_choice_core_seconds_per_megapixel": door.cost.measured,
        "charged_core_seconds_per_megapixel": door.cost.core_seconds_per_megapixel,
    }))


# --- fast styles beside a Gatys optimization -------------------------------------------------


def gatys_beside(duration: float = 30.0, styles: tuple[str, ...] = ("udnie", "wave")) -> dict:
    """Fast-style latency (192 px photos, concurrency 2) alone, then with one Gatys request
    (256 px, until its ``max_seconds``) running. The Gatys worker gets random-weight VGG19
    test weights (tests/support) when no real ones are configured: the speed is the same,
    the image is not."""
    with tempfile.TemporaryDirectory() as folder:
        env = {}
        if not settings.env("STYLE_VGG19_WEIGHTS"):
            from tests.support.random_vgg import TEST_OPT_IN_ENV, write_random_weights

            weights = write_random_weights(Path(folder) / "vgg19-random.pth", "vgg19", seed=0)
            env = {"STYLE_VGG19_WEIGHTS": str(weights), **TEST_OPT_IN_ENV}
        with serving(Path(folder), env) as server:
            run_load(server.inference_url, list(styles), 2, 5, 20)  # warm-up
            alone = run_load(server.inference_url, list(styles), 2, duration, 100_000).summary()
            content, style = jpeg(photo(256, 256, 0)), jpeg(photo(256, 256, 1))
            params = {"iterations": "1000", "max_seconds": str(duration + 15)}
            box: list[requests.Response] = []
            gatys = threading.Thread(target=lambda: box.append(requests.post(
                f"{server.inference_url}/predictions/gatys", files={"content": content, "style": style},
                data=params, timeout=CLIENT_TIMEOUT_S)))
            gatys.start()
            time.sleep(5)  # the optimization is under way
            beside = run_load(server.inference_url, list(styles), 2, duration, 100_000).summary()
            gatys.join()
    answer = box[0] if box else None
    return {
        "fast_alone": alone,
        "fast_beside_gatys": beside,
        "gatys_status": answer.status_code if answer is not None else None,
        "gatys_stop_reason": answer.headers.get("X-Gatys-Stop-Reason") if answer is not None else None,
    }


# --- steady load ---------------------------------------------------------------------------------


def measure(server, styles: list[str], concurrency: int, duration: float, max_requests: int) -> dict:
    """Warm-up, RSS, the load run, RSS again."""
    run_load(server.inference_url, styles, concurrency, duration=min(10.0, duration / 4), max_requests=4 * concurrency)
    pid = java_pid(server)
    rss_warm = server_rss(pid)
    result = run_load(server.inference_url, styles, concurrency, duration, max_requests)
    report = result.summary()
    report.update(
        concurrency=concurrency,
        duration_s=round(result.duration, 1),
        rss_after_warmup_mb=round(rss_warm / 2**20, 1),
        rss_at_end_mb=round(server_rss(pid) / 2**20, 1),
    )
    return report


def steady(args) -> dict:
    with tempfile.TemporaryDirectory() as folder, serving(Path(folder)) as server:
        return measure(server, args.styles, args.concurrency, args.duration, args.max_requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", nargs="+", choices=["steady", "burst", "kills", "gatys", "calibrate"],
                        default=["steady"])
    parser.add_argument("--url", help="steady mode: an already running server (default: start one)")
    parser.add_argument("--styles", nargs="+", default=["udnie", "wave", "scream"])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=8, help="burst mode: photos sent at once")
    parser.add_argument("--side", type=int, default=4096, help="burst mode: the photos' side in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="kills mode: kills per phase")
    parser.add_argument("--out", type=Path, help="JSON file each mode's figures are written into, beside the "
                        "other modes' (e.g. bench/results/load.json, which the benchmark report reads)")
    args = parser.parse_args(argv)
    report: dict = {}
    failed = False
    for mode in args.mode:
        if mode == "steady" and args.url:
            result = run_load(args.url, args.styles, args.concurrency, args.duration, args.max_requests)
            report[mode] = result.summary()
            failed |= bool(result.failures)
        elif mode == "steady":
            report[mode] = steady(args)
            failed |= report[mode]["failed"] > 0
        elif mode == "burst":
            report[mode] = burst(args.burst, args.side)
            failed |= report[mode]["unanswered"] > 0 or report[mode]["workers_killed"] > 0
        elif mode == "gatys":
            report[mode] = gatys_beside(args.duration if args.duration != 60.0 else 30.0)
            failed |= report[mode]["fast_beside_gatys"]["failed"] > 0
        elif mode == "calibrate":
            report[mode] = calibrate(args.side)
        else:
            report[mode] = kills(args.rounds)
            failed |= any(r["unanswered"] for phase, r in report[mode].items() if "not shipped" not in phase)
        print(json.dumps({mode: report[mode]}, indent=1), flush=True)
        if args.out:
            kept = json.loads(args.out.read_text()) if args.out.exists() else {}
            args.out.write_text(json.dumps({**kept, mode: report[mode]}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
