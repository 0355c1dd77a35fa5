"""Choosing how a style network runs on this machine: by measurement, never by assumption.

Machines differ (AVX2 only; AVX-512 with VNNI and BF16; a GPU), and so does the fastest
correct way to run the same ``.onnx`` file. When a model is opened, every candidate the
machine allows (``core.engines.candidates``) runs a batch of different real photos
(``core.photos.measuring_photos``), its output is compared with ONNX Runtime fp32 (the
reference the export checked against PyTorch) photo by photo, those whose worst photo is
below a PSNR floor are dropped, and the fastest of the rest (timed on one photo) serves. A bf16 candidate that
misses the floor is measured again with its instance norms kept in fp32. The result is cached
in the runtime folder, keyed by the model file, the CPU and the libraries, so a restarted
worker opens only the chosen engine.

Settings (model config ``handler.<name>``; the ``STYLE_<NAME>`` environment variable wins,
so an operator can retune a deployed archive; both declared in ``core.settings``):

- ``backend``: ``auto`` | ``onnxruntime`` | ``openvino``;
- ``precision``: ``auto`` | ``fp32`` | ``bf16`` | ``int8`` | ``fp16`` | ``fast``. ``fast`` is
  the opt-in tier that trades quality for throughput: OpenVINO's int8 file (its float layers
  in bf16 where the CPU has BF16) or OpenVINO bf16, whichever is faster above the fast floor;
  CPUs without int8 dot-product instructions (VNNI, AMX) refuse it;
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
#: The opt-in fast tier (see the module docstring).
FAST = "fast"
#: What the ``precision`` setting accepts besides ``auto``.
PRECISION_SETTINGS = (*PRECISIONS, FAST)
#: The floor when the precision is automatic: bf16 usually passes it, int8 does not.
DEFAULT_MIN_PSNR_DB = 45.0
#: The floor of an explicitly asked-for precision (int8 trades a little quality for speed,
#: the fast tier more).
PRECISION_FLOORS = {"fp32": 45.0, "bf16": 45.0, "fp16": 40.0, "int8": 36.0, FAST: 32.0}
#: CPU flags of int8 dot-product instructions, without which int8 is no faster than float.
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: Side of the square measuring photos: large enough for the kernels' real behaviour and for
#: a precision's weak spots to show, small enough that measuring every candidate on all of
#: them costs seconds once per machine.
MEASURE_SIDE = 256
#: How many different photos the quality floor is checked on (``core.photos.measuring_photos``).
MEASURE_PHOTOS = 3
#: Timed runs per candidate (after one warm-up run); the best counts.
MEASURE_REPEATS = 2
CACHE_ENV = "STYLE_RUNTIME_DIR"
#: 2: the floor is checked on several photos (choices measured on one are measured again).
CACHE_VERSION = 2


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
        return cls(choice("backend", engines.BACKENDS), choice("precision", PRECISION_SETTINGS), floor, threads)

    def floor(self) -> float:
        if self.min_psnr_db is not None:
            return self.min_psnr_db
        return DEFAULT_MIN_PSNR_DB if self.precision == AUTO else PRECISION_FLOORS[self.precision]


@dataclass
class Measurement:
    label: str
    seconds: float
    psnr_db: float  # the worst photo's
    photos_psnr_db: list[float] = field(default_factory=list)  # each photo's, in order


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


def cpu_has_int8() -> bool:
    """Whether this CPU has int8 dot-product instructions (VNNI or AMX)."""
    return any(flag in cpu.cpu_flags() for flag in INT8_FLAGS)


def fast_tier(candidate: Candidate) -> bool:
    """Whether ``candidate`` belongs to the fast tier: OpenVINO on the CPU at int8 or bf16."""
    return (candidate.backend == "openvino" and candidate.device == "cpu" and candidate.precision in ("int8", "bf16")
            and not candidate.fp32_norms)


def wanted(found: list[Candidate], settings: RuntimeSettings) -> list[Candidate]:
    """The candidates the settings allow; an explicit setting nothing here can meet is an error."""
    if settings.precision == FAST:
        return _fast_candidates(found, settings)
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


def _fast_candidates(found: list[Candidate], settings: RuntimeSettings) -> list[Candidate]:
    if not cpu_has_int8():
        raise SettingError("precision fast asked for, but this CPU has no int8 dot-product instructions (VNNI or "
                           "AMX), so int8 would not be faster here; use precision auto (the fastest at full quality)")
    if settings.backend == "onnxruntime":
        raise SettingError("precision fast runs on OpenVINO; use backend auto or openvino with it")
    kept = [c for c in found if fast_tier(c)]
    if not kept:
        raise SettingError("precision fast needs OpenVINO with an int8 file or BF16 on this CPU; available here: "
                           + ", ".join(c.label for c in found))
    return kept


def psnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """PSNR of two images as delivered (rounded and clipped to 0..255)."""
    a = np.clip(np.rint(reference), 0, 255).astype(np.float64)
    b = np.clip(np.rint(output), 0, 255).astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def photo_psnrs(reference: np.ndarray, output: np.ndarray) -> list[float]:
    """PSNR of each image of a batch (the measuring photos) against the reference's."""
    return [psnr_db(expected, got) for expected, got in zip(reference, output, strict=True)]


def measure(engine: Engine, feeds: dict[str, np.ndarray], clock: Callable[[], float],
            repeats: int = MEASURE_REPEATS) -> tuple[float, np.ndarray]:
    """The output for the whole batch of measuring photos (also the warm-up run), and the
    best-of-``repeats`` seconds of one run on the first photo alone: every photo is checked,
    but timing one keeps a worker's cold start short."""
    output = engine.run(feeds)[0]
    first_photo = {**feeds, "image": feeds["image"][:1]}
    best = math.inf
    for _ in range(repeats):
        started = clock()
        engine.run(first_photo)
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
    """The fastest allowed candidate whose output reaches the floor against the reference on
    every photo of ``feeds`` (a batch: ``feeds["image"]`` holds the measuring photos).

    ``recorded``: per variant file (``int8``, ``fp16``), the lowest PSNR the build measured
    on its real check photos; a candidate running that file counts the lower of it and its
    own measurement here. A bf16 candidate below the floor is measured again with its norms
    in fp32 (``Candidate.with_fp32_norms``): statistics over a whole image are where bf16's
    short mantissa may lose most, at the cost of a few layers. With one allowed candidate
    nothing is timed, but its quality is still checked. When no reduced-precision candidate
    reaches the floor under ``auto`` settings, the reference serves.
    """
    recorded = recorded or {}
    allowed = wanted(found, settings)
    repeats = 1 if len(allowed) == 1 else MEASURE_REPEATS
    reference_engine = open_candidate(REFERENCE)
    reference_seconds, reference = measure(reference_engine, feeds, clock, repeats)
    floor = settings.floor()
    measurements: list[Measurement] = []
    best: tuple[float, Candidate, Engine] | None = None
    queue = list(allowed)
    while queue:
        candidate = queue.pop(0)
        if candidate == REFERENCE:
            engine, seconds, quality, per_photo = reference_engine, reference_seconds, math.inf, []
        else:
            engine = open_candidate(candidate)
            seconds, output = measure(engine, feeds, clock, repeats)
            per_photo = photo_psnrs(reference, output)
            quality = min(per_photo)
            if candidate.uses_variant_file:
                quality = min(quality, recorded.get(candidate.precision, math.inf))
        measurements.append(Measurement(candidate.label, seconds, quality, per_photo))
        if quality >= floor and (best is None or seconds < best[0]):
            best = (seconds, candidate, engine)
        elif quality < floor and settings.precision != FAST and candidate.with_fp32_norms() is not None:
            queue.append(candidate.with_fp32_norms())
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
    """Everything the choice depends on: the model's bytes, the CPU, the libraries, the settings
    (the measuring photos are the version's: change ``CACHE_VERSION`` with them)."""
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
