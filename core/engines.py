"""Backends that run an ONNX graph: ONNX Runtime and OpenVINO, each at a precision.

A ``Candidate`` names one way to run a style network on this machine (backend, precision,
device); ``open_engine`` makes it an ``Engine``, whose ``run(feeds)`` returns the graph's
outputs in order. Both backends read the same ``.onnx`` files; precisions map to files and
settings as follows:

- ``fp32``: the float file;
- ``bf16``: the float file with OpenVINO's inference-precision hint (CPUs with BF16 only);
- ``int8``: the static-QDQ file ``<name>.int8.onnx`` (on OpenVINO with the bf16 hint for
  the layers left in float, where the CPU has BF16);
- ``fp16``: on a GPU, ONNX Runtime's CUDA provider with ``<name>.fp16.onnx``, or OpenVINO's
  GPU device with the f16 hint.

An OpenVINO bf16 candidate may keep its normalisation layers in fp32 (``fp32_norms``, label
``openvino/bf16+fp32norms``): the runtime choice tries it when plain bf16 misses the floor.

Which candidate serves is decided by measurement (``core.runtime_choice``), never assumed
from the CPU's name.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from core.onnx_session import session_options
from core.settings import thread_count

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8", "fp16")
#: Sibling files of ``<name>.onnx`` that hold the reduced-precision variants.
VARIANT_FILES = {"int8": ".int8.onnx", "fp16": ".fp16.onnx"}
#: The label suffix of a candidate that keeps its normalisation layers in fp32.
FP32_NORMS = "+fp32norms"


@dataclass(frozen=True)
class Candidate:
    """One way to run a network: ``device`` is ``cpu``, ``cuda:<id>`` (ONNX Runtime) or
    ``GPU`` (OpenVINO's GPU plugin)."""

    backend: str
    precision: str
    device: str = "cpu"
    #: Instance norms (statistics, scale and shift) in fp32, the rest at ``precision``.
    fp32_norms: bool = False

    @property
    def label(self) -> str:
        """What the response header, the logs and the metrics call it: ``openvino/bf16``."""
        suffix = "" if self.device == "cpu" else f"@{self.device}"
        return f"{self.backend}/{self.precision}{FP32_NORMS if self.fp32_norms else ''}{suffix}"

    @classmethod
    def from_label(cls, label: str) -> Candidate:
        """The inverse of ``label``: ``openvino/bf16``, ``openvino/bf16+fp32norms`` or
        ``onnxruntime/fp16@cuda:0``."""
        name, _, device = label.partition("@")
        backend, _, precision = name.partition("/")
        fp32_norms = precision.endswith(FP32_NORMS)
        return cls(backend, precision.removesuffix(FP32_NORMS), device or "cpu", fp32_norms)

    def with_fp32_norms(self) -> Candidate | None:
        """This candidate with its norms in fp32, where that is a different way to run it
        (OpenVINO on a CPU at bf16); else None."""
        if self.backend == "openvino" and self.device == "cpu" and self.precision == "bf16" and not self.fp32_norms:
            return Candidate(self.backend, self.precision, self.device, fp32_norms=True)
        return None

    @property
    def uses_variant_file(self) -> bool:
        """True when this candidate runs a reduced-precision file rather than the float one."""
        return self.precision == "int8" or (self.precision == "fp16" and self.backend == "onnxruntime")

    def model_file(self, float_path: Path) -> Path:
        """The file this candidate runs, given the float ``<name>.onnx``."""
        return variant_path(float_path, self.precision) if self.uses_variant_file else float_path


def quality_path(float_path: Path) -> Path:
    """``udnie.onnx`` -> ``udnie.quality.json``: the build's measured quality of the variants."""
    return float_path.with_name(float_path.name.removesuffix(".onnx") + ".quality.json")


def recorded_quality(float_path: Path) -> dict[str, float]:
    """Per variant, the lowest PSNR against the float file on the build's real check photos
    (empty when the build wrote no record)."""
    import json

    try:
        record = json.loads(quality_path(float_path).read_text())
        return {kind: float(entry["psnr_min_db"]) for kind, entry in record.items() if "psnr_min_db" in entry}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def variant_path(float_path: Path, precision: str) -> Path:
    """``udnie.onnx`` -> ``udnie.int8.onnx`` (or ``.fp16.onnx``)."""
    return float_path.with_name(float_path.name.removesuffix(".onnx") + VARIANT_FILES[precision])


REFERENCE = Candidate("onnxruntime", "fp32")


class Engine(Protocol):
    """A graph ready to run: ``run`` takes named inputs, returns outputs in graph order."""

    candidate: Candidate
    input_names: tuple[str, ...]

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> list[np.ndarray]: ...


# ---------------------------------------------------------------------------------------
# What this machine has
# ---------------------------------------------------------------------------------------


@cache
def openvino_core():
    """OpenVINO's runtime core, or None where the package is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.Core()


def openvino_cpu_has_bf16() -> bool:
    """BF16 as OpenVINO's CPU plugin reports it (it checks the instructions it needs)."""
    core = openvino_core()
    return core is not None and "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def candidates(float_path: Path, gpu_id: int | None = None) -> list[Candidate]:
    """Every candidate this machine and these files allow, the reference first."""
    found = [REFERENCE]
    int8 = variant_path(float_path, "int8").is_file()
    if int8:
        found.append(Candidate("onnxruntime", "int8"))
    if gpu_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        device = f"cuda:{gpu_id}"
        found.append(Candidate("onnxruntime", "fp32", device))
        if variant_path(float_path, "fp16").is_file():
            found.append(Candidate("onnxruntime", "fp16", device))
    core = openvino_core()
    if core is not None:
        found.append(Candidate("openvino", "fp32"))
        if openvino_cpu_has_bf16():
            found.append(Candidate("openvino", "bf16"))
        if int8:
            found.append(Candidate("openvino", "int8"))
        if "GPU" in core.available_devices:
            found += [Candidate("openvino", "fp32", "GPU"), Candidate("openvino", "fp16", "GPU")]
    return found


# ---------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------


def open_engine(model: Path | bytes, candidate: Candidate, threads: int = 0, shared_arena: bool = False) -> Engine:
    """Loads ``model`` (a file, or a serialized graph such as a tiling stage) for ``candidate``.

    ``threads`` 0 means every core (``core.settings.thread_count``). ``shared_arena`` (ONNX
    Runtime) makes many sessions that run one after another share one memory arena, as the
    tiling stages do.
    """
    if candidate.backend == "onnxruntime":
        return OrtEngine(model, candidate, threads, shared_arena)
    if candidate.backend == "openvino":
        return OpenVinoEngine(model, candidate, threads)
    raise ValueError(f"unknown backend {candidate.backend!r}; use one of {', '.join(BACKENDS)}")


class OrtEngine:
    """ONNX Runtime: CPU, or CUDA on the device the candidate names."""

    def __init__(self, model: Path | bytes, candidate: Candidate, threads: int = 0, shared_arena: bool = False):
        options = session_options(threads)
        if shared_arena:
            _use_shared_arena(options)
        providers: list = ["CPUExecutionProvider"]
        if candidate.device.startswith("cuda"):
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(candidate.device.split(":")[1])}))
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, sess_options=options, providers=providers)
        self.candidate = candidate
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> list[np.ndarray]:
        return self.session.run(None, feeds, _RUN_AND_SHRINK if shrink else None)


class OpenVinoEngine:
    """OpenVINO: reads the ONNX graph itself (dynamic shapes kept), compiled for the device
    with the precision as an inference hint. No CPU pinning: TorchServe runs one worker
    process per model on the same cores."""

    HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

    def __init__(self, model: Path | bytes, candidate: Candidate, threads: int = 0):
        core = openvino_core()
        if core is None:
            raise RuntimeError("backend 'openvino' asked for, but the openvino package is not installed")
        graph = core.read_model(model if isinstance(model, bytes) else str(model))
        if candidate.fp32_norms:
            graph, self._weights = _norms_in_fp32(graph)
        device = "GPU" if candidate.device == "GPU" else "CPU"
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if candidate.precision == "int8":  # the QDQ file; its float layers in bf16 where possible
            hint = "bf16" if device == "CPU" and openvino_cpu_has_bf16() else ("f16" if device == "GPU" else "f32")
        else:
            hint = self.HINTS[candidate.precision]
        config["INFERENCE_PRECISION_HINT"] = hint
        if device == "CPU":
            config.update({"INFERENCE_NUM_THREADS": thread_count(threads), "NUM_STREAMS": 1,
                           "ENABLE_CPU_PINNING": False})
        self.compiled = core.compile_model(graph, device, config)
        self.candidate = candidate
        self.input_names = tuple(port.get_any_name() for port in self.compiled.inputs)
        self._outputs = list(self.compiled.outputs)

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> list[np.ndarray]:
        # A request per call: cheap, and safe when one engine serves several threads (the app).
        request = self.compiled.create_infer_request()
        request.infer(feeds)
        return [np.array(request.get_tensor(port).data) for port in self._outputs]


#: Normalisation layers and the element-wise scale and shift that follow them.
NORM_TYPES = ("MVN",)
NORM_AFFINE_TYPES = ("Multiply", "Add")
#: OpenVINO's per-node "keep the original precision" mark, as its IR format writes it. The CPU
#: plugin skips a node so marked when it lowers the graph to the inference precision (bf16 as
#: well as f16). Python cannot attach this attribute object to a node directly, so the graph
#: goes through the IR format, whose reader builds it from the text.
_KEEP_PRECISION = {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:f16"}


def norm_layers(graph) -> set[str]:
    """Names of the instance norms in ``graph`` and of the scale and shift applied to each
    (a chain of Multiply/Add right after it): the statistics and the affine step together."""
    names: set[str] = set()
    for node in graph.get_ordered_ops():
        if node.get_type_name() not in NORM_TYPES:
            continue
        names.add(node.get_friendly_name())
        frontier = [node]
        while frontier:
            for target in frontier.pop().output(0).get_target_inputs():
                follower = target.get_node()
                if follower.get_type_name() in NORM_AFFINE_TYPES and follower.get_friendly_name() not in names:
                    names.add(follower.get_friendly_name())
                    frontier.append(follower)
    return names


def _norms_in_fp32(graph):
    """``graph`` with its norm layers marked to keep fp32, and the weights buffer it reads
    (kept alive with the engine)."""
    import openvino

    keep = norm_layers(graph)
    with tempfile.TemporaryDirectory(prefix="norms-fp32-") as folder:
        xml_path, bin_path = Path(folder) / "model.xml", Path(folder) / "model.bin"
        openvino.save_model(graph, xml_path, compress_to_fp16=False)
        tree = ElementTree.parse(xml_path)
        weights = np.fromfile(bin_path, np.uint8)
    for layer in tree.getroot().iter("layer"):
        if layer.get("name") in keep:
            rt_info = layer.find("rt_info")
            if rt_info is None:
                rt_info = ElementTree.SubElement(layer, "rt_info")
            ElementTree.SubElement(rt_info, "attribute", _KEEP_PRECISION)
    text = ElementTree.tostring(tree.getroot(), encoding="unicode")
    return openvino_core().read_model(text, openvino.Tensor(weights)), weights


def runtime_precisions(engine: OpenVinoEngine, layer_type: str) -> list[str]:
    """The precision each compiled layer of ``layer_type`` runs at (``MVN``: ``f32``, ``bf16``)."""
    found = []
    for node in engine.compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if info["layerType"].astype(str) == layer_type:
            found.append(info["runtimePrecision"].astype(str))
    return found


# Tiling runs some 17 stage sessions one after another: one shared arena keeps a single
# peak instead of one per session, and shrinking it after each stage's last tile stops
# stages of different shapes fragmenting it and hands memory back between requests.
_RUN_AND_SHRINK = ort.RunOptions()
_RUN_AND_SHRINK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
_shared_arena = False


def _use_shared_arena(options: ort.SessionOptions) -> None:
    """Makes sessions made with ``options`` use the process-wide CPU arena (registered on
    first use; growth exactly as requested, so it never holds more than one run's peak)."""
    global _shared_arena
    if not _shared_arena:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, 1 << 20, -1))  # 1: kSameAsRequested
        _shared_arena = True
    options.add_session_config_entry("session.use_env_allocators", "1")
