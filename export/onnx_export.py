"""ONNX export of a style network, in two forms, each checked before it is kept.

* ``<style>.onnx`` – ``image`` float32 ``[N, 3, H, W]`` RGB 0..255 -> ``stylized`` (same
  layout), dynamic batch/height/width. The TorchServe handler runs this one.
* ``<style>.uint8.onnx`` – ``image`` uint8 ``[H, W, 3]`` RGB -> ``stylized`` uint8
  ``[H, W, 3]``: decode a picture, feed its pixels, encode the answer; no other code.
* ``<style>.tiling.npz`` – the float graph split into the stages ``core.tiling`` runs
  large images in (written here, where the ``onnx`` package is, so serving needs only
  ONNX Runtime); the archive carries it beside ``<style>.onnx``.

Both are single self-contained files (no ``.onnx.data``), pass ``onnx.checker``, and must
match PyTorch on a real photo within 1/255 of the range, or the export fails. The float
graph computes its RGB output conv over 4x4 pixel blocks (``export.graph_rewrites``):
the same sums, faster; the parity check is what proves it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from PIL import Image
from torch import nn

from core import codec
from core.tiling_graphs import write_bundle
from core.tiling_program import bundle_path
from export.graph_rewrites import regroup_rgb_output_convs
from networks import SizePreserving

OPSET = 18
#: Parity tolerance on the 0..255 scale: 1/255 of the range.
PARITY_TOLERANCE = 1.0


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance: the export is not kept."""


def export_float(net: nn.Module, path: Path, metadata: dict[str, str]) -> torch.export.ExportedProgram:
    """Exports ``SizePreserving(net)`` with dynamic batch, height and width."""
    model = SizePreserving(net).eval()
    # Batch 2 and sizes that are not multiples of 4, so nothing specializes to the example.
    example = torch.rand(2, 3, 66, 83) * 255
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    program = torch.export.export(model, (example,), dynamic_shapes={"x": dims})
    onnx_program = torch.onnx.export(
        program, input_names=["image"], output_names=["stylized"], opset_version=OPSET, dynamo=True
    )
    onnx_program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    _name_dims(proto.graph.input[0], ["batch", 3, "height", "width"])
    _name_dims(proto.graph.output[0], ["batch", 3, "height", "width"])
    regroup_rgb_output_convs(proto)  # faster on CPUs; check_parity compares the result with PyTorch
    _write(proto, path, metadata)
    return program


def _name_dims(value_info: onnx.ValueInfoProto, names: list) -> None:
    for dim, name in zip(value_info.type.tensor_type.shape.dim, names, strict=True):
        if isinstance(name, str):
            dim.dim_param = name
        else:
            dim.dim_value = name


def _write(proto: onnx.ModelProto, path: Path, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)


def wrap_uint8(float_path: Path, path: Path, metadata: dict[str, str]) -> None:
    """Builds the uint8 HWC form around the float graph: cast/transpose in, round/clip out."""
    proto = onnx.load(str(float_path))
    graph = proto.graph
    for node in graph.node:
        node.input[:] = ["image_nchw" if n == "image" else n for n in node.input]
        node.output[:] = ["stylized_nchw" if n == "stylized" else n for n in node.output]
    graph.initializer.extend(
        [
            helper.make_tensor("axis0", TensorProto.INT64, [1], [0]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("full", TensorProto.FLOAT, [], [255.0]),
        ]
    )
    before = [
        helper.make_node("Cast", ["image"], ["image_f32"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_f32"], ["image_chw"], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["image_chw", "axis0"], ["image_nchw"]),
    ]
    after = [
        helper.make_node("Squeeze", ["stylized_nchw", "axis0"], ["stylized_chw"]),
        helper.make_node("Transpose", ["stylized_chw"], ["stylized_hwc"], perm=[1, 2, 0]),
        helper.make_node("Round", ["stylized_hwc"], ["stylized_round"]),
        helper.make_node("Clip", ["stylized_round", "zero", "full"], ["stylized_clip"]),
        helper.make_node("Cast", ["stylized_clip"], ["stylized"], to=TensorProto.UINT8),
    ]
    nodes = before + list(graph.node) + after
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("image", TensorProto.UINT8, ["height", "width", 3]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("stylized", TensorProto.UINT8, ["height", "width", 3]))
    del graph.value_info[:]
    _write(proto, path, metadata)


def check_parity(net: nn.Module, float_path: Path, uint8_path: Path, photo: Path, max_side: int = 320) -> dict:
    """Runs a real photo (and an odd-sized crop of it) through PyTorch and both ONNX forms.

    Returns the measured differences; raises ``ParityError`` past the tolerance.
    """
    image = codec.fit_max_side(Image.open(photo).convert("RGB"), max_side)
    odd = image.crop((0, 0, image.width - 1 - image.width % 2, image.height - image.height % 2 - 1))
    model = SizePreserving(net).eval()
    float_session = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    uint8_session = ort.InferenceSession(str(uint8_path), providers=["CPUExecutionProvider"])
    report = {"photo": str(photo), "sizes": [], "max_abs_diff_float": 0.0, "max_abs_diff_uint8": 0.0}
    for picture in (image, odd):
        x = codec.to_array(picture)[None]
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = float_session.run(None, {"image": x})[0]
        pixels = np.asarray(picture, dtype=np.uint8)
        got_uint8 = uint8_session.run(None, {"image": pixels})[0]
        expected_uint8 = np.clip(np.rint(expected[0]), 0, 255).transpose(1, 2, 0)
        report["sizes"].append(list(picture.size))
        report["max_abs_diff_float"] = max(report["max_abs_diff_float"], float(np.abs(got - expected).max()))
        report["max_abs_diff_uint8"] = max(
            report["max_abs_diff_uint8"], float(np.abs(got_uint8.astype(np.float32) - expected_uint8).max())
        )
        if got.shape != expected.shape or got_uint8.shape != pixels.shape:
            raise ParityError(f"shape mismatch: {got.shape} / {got_uint8.shape} vs {expected.shape}")
    worst = max(report["max_abs_diff_float"], report["max_abs_diff_uint8"])
    if worst > PARITY_TOLERANCE:
        raise ParityError(f"ONNX Runtime differs from PyTorch by {worst:.3f} (> {PARITY_TOLERANCE}): {report}")
    return report


def export_style(net: nn.Module, out_dir: Path, name: str, metadata: dict[str, str], photo: Path) -> dict:
    """Writes ``<name>.onnx``, ``<name>.uint8.onnx``, ``<name>.pt2`` (torch.export), checked,
    and ``<name>.tiling.npz``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    float_path, uint8_path = out_dir / f"{name}.onnx", out_dir / f"{name}.uint8.onnx"
    program = export_float(net, float_path, {**metadata, "io": "float32 NCHW RGB 0..255"})
    wrap_uint8(float_path, uint8_path, {**metadata, "io": "uint8 HWC RGB"})
    torch.export.save(program, str(out_dir / f"{name}.pt2"))
    try:
        report = check_parity(net, float_path, uint8_path, photo)
    except ParityError:
        float_path.unlink(missing_ok=True)
        uint8_path.unlink(missing_ok=True)
        bundle_path(float_path).unlink(missing_ok=True)
        raise
    write_bundle(float_path)
    (out_dir / f"{name}.parity.json").write_text(json.dumps(report, indent=1))
    return report
