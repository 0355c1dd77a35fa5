"""Choosing how a style network runs on this machine: by measurement, never by assumption.

Machines differ (AVX2 only; AVX-512 with VNNI and BF16; a GPU), and so does the fastest
correct way to run the same ``.onnx`` file. When a model is opened, every candidate the
machine allows (``core.engines.candidates``) is timed on a fixed real photo, its output is
compared with ONNX Runtime fp32 (the reference the export checked against PyTorch), those
below a PSNR floor are dropped, and the fastest of the rest serves. The result is cached
in the runtime folder, keyed by the model file, the CPU and the libraries, so a restarted
worker opens only the chosen engine.

Settings (model config ``handler.<name>``; the ``STYLE_<NAME>`` environment variable wins,
so an operator can retune a deployed archive; both declared in ``core.settings``):

- ``backend``: ``auto`` | ``onnxruntime`` | ``openvino``;
- ``precision``: ``auto`` | ``fp32`` | ``bf16`` | ``int8`` | ``fp16``;
- ``min_psnr_db``: the floor (default 45 dB with ``precision: auto``, so int8 is chosen only
  when asked for; with an explicit precision, that precision's own floor);
- ``threads``: CPU threads per engine (0 = every core, ``core.settings.thread_count``).

Asked-for settings that cannot be met stop the worker with a message naming the setting;
``auto`` never fails for lack of an instruction set: ONNX Runtime fp32 is always a candidate.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core import cpu, engines, settings
from core.checksums import sha256_of
from core.engines import PRECISIONS, REFERENCE, Candidate, Engine
from core.files import atomic_write
from core.settings import SettingError as SettingError  # re-exported: callers catch it from here

logger = logging.getLogger(__name__)

AUTO = "auto"
#: The floor when the precision is automatic: bf16 passes it, int8 does not.
DEFAULT_MIN_PSNR_DB = 45.0
#: The floor of an explicitly asked-for precision (int8 trades a little quality for speed).
PRECISION_FLOORS = {"fp32": 45.0, "bf16": 45.0, "fp16": 40.0, "int8": 36.0}
#: Longer side of the measuring photo: large enough for the kernels' real behaviour, small
#: enough that measuring every candidate costs a few seconds once per machine.
MEASURE_SIDE = 320
#: Timed runs per candidate (after one warm-up run); the best counts.
MEASURE_REPEATS = 2
CACHE_ENV = "STYLE_RUNTIME_DIR"
CACHE_VERSION = 1


@dataclass(frozen=True)
class RuntimeSettings:
    backend: str = AUTO
    precision: str = AUTO
    min_psnr_db: float | None = None  # None: the default for the precision (see above)
    threads: int = 0

    @classmethod
    def from_config(cls, config: Mapping | None = None, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Reads ``config`` (a model config's ``handler`` section), the environment (default:
        this process's) winning."""
        config = config or {}

        def setting(name: str) -> tuple[object, str]:
            variable = f"STYLE_{name.upper()}"
            from_env = settings.env(variable, env)
            return (from_env, f"${variable}") if from_env is not None else (config.get(name), f"handler.{name}")

        def choice(name: str, allowed: tuple[str, ...]) -> str:
            raw, source = setting(name)
            value = str(raw or AUTO).strip().lower()
            if value not in (AUTO, *allowed):
                raise SettingError(f"{source} must be one of auto, {', '.join(allowed)}; got {raw!r}")
            return value

        raw_floor, source = setting("min_psnr_db")
        floor = None
        if raw_floor not in (None, ""):
            try:
                floor = float(raw_floor)
            except (TypeError, ValueError):
                floor = math.nan
            if not math.isfinite(floor) or floor <= 0:
                raise SettingError(f"{source} must be a positive number of dB (e.g. 45), got {raw_floor!r}")
        raw_threads, source = setting("threads")
        try:
            threads = int(raw_threads or 0)
        except (TypeError, ValueError):
            threads = -1
        if threads < 0:
            raise SettingError(f"{source} must be a whole number of threads (0 = every core), got {raw_threads!r}")
        return cls(choice("backend", engines.BACKENDS), choice("precision", PRECISIONS), floor, threads)

    def floor(self) -> float:
        if self.min_psnr_db is not None:
            return self.min_psnr_db
        return DEFAULT_MIN_PSNR_DB if self.precision == AUTO else PRECISION_FLOORS[self.precision]


@dataclass
class Measurement:
    label: str
    seconds: float
    psnr_db: float


@dataclass
class Choice:
    """The chosen candidate, its open engine, and what was measured to choose it."""

    candidate: Candidate
    engine: Engine
    measurements: list[Measurement] = field(default_factory=list)
    cached: bool = False

    def describe(self) -> dict:
        return {
            "runtime": self.candidate.label,
            "cached": self.cached,
            "measured": [asdict(m) for m in self.measurements],
        }


def wanted(found: list[Candidate], settings: RuntimeSettings) -> list[Candidate]:
    """The candidates the settings allow; an explicit setting nothing here can meet is an error."""
    kept = [c for c in found if settings.backend in (AUTO, c.backend) and settings.precision in (AUTO, c.precision)]
    if kept:
        return kept
    if settings.precision == "bf16" and not engines.openvino_cpu_has_bf16():
        raise SettingError("precision bf16 asked for, but this CPU has no BF16 instructions (or openvino is "
                           "missing); use precision auto, fp32 or int8")
    if settings.precision == "fp16":
        raise SettingError("precision fp16 needs a GPU (ONNX Runtime CUDA or OpenVINO GPU); none is available")
    available = ", ".join(c.label for c in found)
    raise SettingError(f"no runtime matches backend {settings.backend!r} and precision {settings.precision!r} "
                       f"here; available: {available}")


def psnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """PSNR of two images as delivered (rounded and clipped to 0..255)."""
    a = np.clip(np.rint(reference), 0, 255).astype(np.float64)
    b = np.clip(np.rint(output), 0, 255).astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def measure(engine: Engine, feeds: dict[str, np.ndarray], clock: Callable[[], float],
            repeats: int = MEASURE_REPEATS) -> tuple[float, np.ndarray]:
    """Best-of-``repeats`` seconds of one run (after a warm-up run), and its output."""
    output = engine.run(feeds)[0]
    best = math.inf
    for _ in range(repeats):
        started = clock()
        output = engine.run(feeds)[0]
        best = min(best, clock() - started)
    return best, output


def choose(
    found: list[Candidate],
    settings: RuntimeSettings,
    open_candidate: Callable[[Candidate], Engine],
    feeds: dict[str, np.ndarray],
    clock: Callable[[], float] = time.perf_counter,
    recorded: Mapping[str, float] | None = None,
) -> Choice:
    """The fastest allowed candidate whose output reaches the floor against the reference.

    ``recorded``: per variant file (``int8``, ``fp16``), the lowest PSNR the build measured
    on its real check photos; a candidate running that file counts the lower of it and its
    own measurement here, since one photo can flatter a variant that others expose.
    With one allowed candidate nothing is timed, but its quality is still checked. When no
    reduced-precision candidate reaches the floor under ``auto`` settings, the reference serves.
    """
    recorded = recorded or {}
    allowed = wanted(found, settings)
    reference_engine = open_candidate(REFERENCE)
    reference_seconds, reference = measure(reference_engine, feeds, clock, repeats=1 if len(allowed) == 1 else
                                           MEASURE_REPEATS)
    floor = settings.floor()
    measurements: list[Measurement] = []
    best: tuple[float, Candidate, Engine] | None = None
    for candidate in allowed:
        if candidate == REFERENCE:
            engine, seconds, quality = reference_engine, reference_seconds, math.inf
        else:
            engine = open_candidate(candidate)
            seconds, output = measure(engine, feeds, clock, repeats=1 if len(allowed) == 1 else MEASURE_REPEATS)
            quality = psnr_db(reference, output)
            if candidate.uses_variant_file:
                quality = min(quality, recorded.get(candidate.precision, math.inf))
        measurements.append(Measurement(candidate.label, seconds, quality))
        if quality >= floor and (best is None or seconds < best[0]):
            best = (seconds, candidate, engine)
    if best is None:
        if settings.backend == AUTO and settings.precision == AUTO:
            best = (reference_seconds, REFERENCE, reference_engine)
        else:
            seen = ", ".join(f"{m.label} {m.psnr_db:.1f} dB" for m in measurements)
            raise SettingError(f"min_psnr_db {floor:g}: no allowed runtime reaches it here ({seen}); lower "
                               "min_psnr_db or use precision auto")
    return Choice(best[1], best[2], measurements)


# ---------------------------------------------------------------------------------------
# The per-machine cache
# ---------------------------------------------------------------------------------------


def cache_key(model: Path, found: list[Candidate], settings: RuntimeSettings) -> str:
    """Everything the choice depends on: the model's bytes, the CPU, the libraries, the settings."""
    import onnxruntime

    parts = {
        "version": CACHE_VERSION,
        "model": sha256_of(model),
        "variants": [sha256_of(c.model_file(model)) for c in found if c.model_file(model) != model],
        "cpu": cpu.cpu_model(),
        "flags": cpu.relevant_flags(),
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "openvino": _openvino_version(),
        "candidates": [c.label for c in found],
        "settings": asdict(settings),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _openvino_version() -> str | None:
    try:
        import openvino

        return openvino.__version__
    except ImportError:
        return None


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$STYLE_RUNTIME_DIR``, else ``~/.cache/style-transfer/runtime``."""
    return settings.env(CACHE_ENV, env) or Path.home() / ".cache" / "style-transfer" / "runtime"


@contextmanager
def measuring_lock(directory: Path) -> Iterator[None]:
    """Holds the machine-wide measuring lock (a file lock in the cache folder; released by
    the kernel if the holder dies). Without a writable folder, measures unlocked."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / ".measuring.lock", "a")  # noqa: SIM115 - held across the yield
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_cached(directory: Path, key: str) -> dict | None:
    try:
        return json.loads((directory / f"choice-{key}.json").read_text())
    except (OSError, ValueError):
        return None


def write_cached(directory: Path, key: str, record: dict) -> None:
    """Written atomically, so a worker reading it never sees half a file."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / f"choice-{key}.json", json.dumps(record, indent=1).encode())
    except OSError as error:  # a read-only folder costs a re-measure next start, nothing else
        logger.warning("runtime choice not cached in %s: %s", directory, error)
