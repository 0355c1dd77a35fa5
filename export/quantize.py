"""Reduced-precision variants of a style network's float ONNX file, and their measured quality.

* ``<style>.int8.onnx`` – ONNX Runtime static quantization in QDQ form (``QuantizeLinear`` /
  ``DequantizeLinear`` around the convolutions, which ONNX Runtime fuses into ``QLinearConv``),
  calibrated on real photos. Same inputs and outputs as the float file.
* ``<style>.fp16.onnx`` – float16 weights and arithmetic, float32 ``image`` / ``stylized``.

``make_variants`` writes both beside the float file and checks them against it; the build
(``python -m export build``) calls it for every style.

Choices, each decided by measuring on real photos against the float file (the figures are
in README, "Performance"):

* Only ``Conv`` is quantized, and not the two convolutions at the RGB ends. They cost the
  most PSNR, and as plain 9x9 convs their GEMMs are 3 wide, where the int8 kernels are
  *slower* than float. The output conv now arrives regrouped over 4x4 blocks
  (``export.graph_rewrites``, 48 wide), and ``rgb_convs`` still recognises it by its channels
  per pixel. ``InstanceNormalization`` and ``ConvTranspose`` have no int8 CPU kernel:
  quantizing around them only adds rounding and Quantize/Dequantize passes.
* Every quantized conv feeds an instance norm, which ignores a positive scale and an offset
  per channel. ``calibrate`` uses that to give all output channels the same range
  before the per-tensor activation quantization, leaving the float result unchanged, so
  one activation grid fits every channel.
* uint8 activations with int8 per-channel weights: the fast pair on x86 (int8/int8 and
  uint8/uint8 are slower; per-tensor weights lose PSNR for no speed). ``reduce_range``
  (7-bit weights) is what ONNX Runtime advises on CPUs without VNNI against 16-bit
  saturation; it costs neither speed nor exactness here, so it stays on.
* Activation ranges: a high percentile of ``|x|`` (``CALIBRATION_PERCENTILE``) on
  ``CALIBRATION_SIDE`` crops (``calibrate``), taken in the same pass as the equalization;
  min/max ranges and smaller crops are less exact.

On ONNX Runtime's CPU provider the fp16 file runs at float32 speed: the CPU kernels here have
no float16 version, so ONNX Runtime casts the weights back to float32 when it loads the file.
It halves the file and is the variant for a GPU; it is measured and reported, not
recommended for CPU serving.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel
from PIL import Image, ImageOps

from core import codec
from core.onnx_session import session_options
from core.photos import content_photos
from export.graph_rewrites import BLOCK

#: Calibration crops are this many pixels square. Texture scale, hence activation ranges, change
#: with the image size: a crop near the sizes served (256-512 px) calibrates them best, and a
#: small one keeps calibration quick.
CALIBRATION_SIDE = 384
#: Convolutions with this few input or output channels (the RGB ends) stay float.
RGB_CHANNELS = 4
#: Bound on the equalizing scale, so a channel that was flat on the calibration photos is
#: not blown up for an image where it is not.
MAX_EQUALIZING_SCALE = 16.0
#: The equalized float graph must reproduce the original within this (0..255 scale, as the
#: export parity check), or the rewrite is wrong and quantization stops. It is not exactly
#: zero: instance norm's epsilon (1e-3) is added to a variance that the rescaling changes.
EQUALIZING_TOLERANCE = 1.0
#: Side of the photo corner that check runs on.
VERIFY_SIDE = 160
#: Activation ranges leave out the rarest ``100 - CALIBRATION_PERCENTILE`` % of values.
CALIBRATION_PERCENTILE = 99.999
#: File name endings of the variants, beside ``<style>.onnx``.
SUFFIXES = {"int8": ".int8.onnx", "fp16": ".fp16.onnx"}
#: A variant below this PSNR against the float file (mean over the check photos) is not kept.
MIN_PSNR_DB = {"int8": 30.0, "fp16": 40.0}
#: Side of the square photo crops the build's quality check runs on: small, so it is quick.
CHECK_SIDE = 256


class VariantError(RuntimeError):
    """A variant could not be made faithfully: it is not kept."""


def photo_batches(photos: Sequence[Path], side: int) -> list[np.ndarray]:
    """Each photo centre-cropped square and resized to ``side``: float ``[1, 3, side, side]``,
    the same crops as the benchmark's (``core.photos.photo``), so sizes mean the same there."""
    batches = []
    for path in photos:
        with Image.open(path) as image:
            square = ImageOps.fit(image.convert("RGB"), (side, side), Image.Resampling.LANCZOS)
        batches.append(codec.to_array(square)[None])
    return batches


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    """A CPU session with the serving settings (on every core: the build has the machine)."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = session_options(os.cpu_count() or 1)
    options.log_severity_level = 3  # the unused-initializer notices are expected here
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def rgb_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions that read or write (about) 3 channels per pixel: they stay
    float. A conv regrouped over pixel blocks (``export.graph_rewrites``) holds a block's
    worth of pixels, ``BLOCK²`` times the channels, in each of its positions."""
    weights = {t.name: t.dims for t in model.graph.initializer}
    blocked = {node.output[0] for node in model.graph.node if node.op_type == "SpaceToDepth"}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv" and node.input[1] in weights
        and min(weights[node.input[1]][:2]) // (BLOCK * BLOCK if node.input[0] in blocked else 1) <= RGB_CHANNELS
    ]


def _quantized_convs(model: onnx.ModelProto, keep_float: Sequence[str]) -> list[onnx.NodeProto]:
    weights = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "Conv" and n.name not in keep_float and n.input[1] in weights]


def _equalizable_convs(model: onnx.ModelProto, keep_float: Sequence[str]) -> list[onnx.NodeProto]:
    """The quantized convs whose output feeds only an instance norm."""
    users = _consumers(model.graph)
    return [
        node
        for node in _quantized_convs(model, keep_float)
        if [user.op_type for user in users.get(node.output[0], [])] == ["InstanceNormalization"]
    ]


def _probe(model: onnx.ModelProto, tensors: Sequence[str]) -> ort.InferenceSession:
    """A session of ``model`` that also returns the intermediate ``tensors``."""
    probe = copy.deepcopy(model)
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in tensors)
    return _session(probe)


def _equalize(model: onnx.ModelProto, convs: Sequence[onnx.NodeProto], outputs: dict[str, list[np.ndarray]]) -> dict:
    """Rescales and shifts each output channel of ``convs`` (each feeds only an instance norm),
    in place, so that on the calibration photos (their ``outputs``) all channels span the same
    range. Returns each output's per-channel ``(scale, offset)``, shaped for ``[N, C, H, W]``.

    Instance norm removes a per-channel offset and positive scale (up to its tiny epsilon), so
    the float result is unchanged; but the int8 grid of the conv's output, one scale for all
    channels, then resolves each channel as finely as the widest one.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    transforms = {}
    for node in convs:
        low = np.min([value.min(axis=(0, 2, 3)) for value in outputs[node.output[0]]], axis=0)
        high = np.max([value.max(axis=(0, 2, 3)) for value in outputs[node.output[0]]], axis=0)
        spread = np.maximum(high - low, 1e-6)
        scale = np.minimum(spread.max() / spread, MAX_EQUALIZING_SCALE).astype(np.float32)
        offset = (-(low + high) / 2 * scale).astype(np.float32)
        weight = initializers[node.input[1]]
        scaled = numpy_helper.to_array(weight) * scale[:, None, None, None]
        weight.CopyFrom(numpy_helper.from_array(scaled, weight.name))
        has_bias = len(node.input) > 2 and node.input[2]
        bias = numpy_helper.to_array(initializers[node.input[2]]) * scale if has_bias else 0.0
        bias_name = f"{node.name}.equalized_bias"
        model.graph.initializer.append(numpy_helper.from_array((bias + offset).astype(np.float32), bias_name))
        node.input[2:] = [bias_name]
        transforms[node.output[0]] = (scale[None, :, None, None], offset[None, :, None, None])
    return transforms


def _check_unchanged(original: ort.InferenceSession, model: onnx.ModelProto, batch: np.ndarray) -> None:
    """Raises ``VariantError`` unless ``model`` still computes what ``original`` does. Checked on
    a corner of one photo: a wrong rewrite shows anywhere, and a corner is quick."""
    corner = {model.graph.input[0].name: np.ascontiguousarray(batch[..., :VERIFY_SIDE, :VERIFY_SIDE])}
    expected = original.run([model.graph.output[0].name], corner)[0]
    moved = float(np.abs(_session(model).run(None, corner)[0] - expected).max())
    if moved > EQUALIZING_TOLERANCE:
        raise VariantError(f"channel equalization changed the float output by {moved:.3f}")


def percentile_range(values: Sequence[np.ndarray], percentile: float = CALIBRATION_PERCENTILE) -> tuple[float, float]:
    """The activation range to quantize: ``percentile`` of ``|x|`` on each photo, the largest
    over photos, within the observed min/max (ONNX Runtime's percentile calibration, without
    its histogram binning). Clipping the rarest 0.001 % keeps the grid fine for the rest."""
    bound = max(float(np.quantile(np.abs(v), percentile / 100)) for v in values)
    low = min(float(v.min()) for v in values)
    high = max(float(v.max()) for v in values)
    return max(low, -bound), min(high, bound)


def calibrate(model: onnx.ModelProto, batches: Sequence[np.ndarray], keep_float: Sequence[str]) -> dict:
    """One pass over the photos for both steps: equalizes the outputs of the quantized convs
    that feed an instance norm (in place; ``VariantError`` if that moved the float output) and
    measures the range of every tensor going into or out of a quantized conv, the outputs as
    rewritten. Returns ``{tensor: (low, high)}``."""
    convs = _equalizable_convs(model, keep_float)
    quantized = _quantized_convs(model, keep_float)
    names = list(dict.fromkeys(name for node in quantized for name in (node.input[0], node.output[0])))
    session = _probe(model, names)
    input_name = model.graph.input[0].name
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in batches:
        for name, value in zip(names, session.run(names, {input_name: batch}), strict=True):
            values[name].append(value)
    transforms = _equalize(model, convs, values)
    _check_unchanged(session, model, batches[0])
    for name, (scale, offset) in transforms.items():
        values[name] = [value * scale + offset for value in values[name]]
    return {name: percentile_range(arrays) for name, arrays in values.items()}


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizer logs per-op notices on the root logger; silence them here only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calibration_photos: Sequence[Path] | None = None,
    side: int = CALIBRATION_SIDE,
) -> Path:
    """Writes the int8 (QDQ) variant of ``fp32_path``, calibrated on ``side``-px square crops
    of the photos (default: ``core.photos.content_photos()``). One self-contained file."""
    photos = list(calibration_photos or content_photos())
    model = onnx.load(str(fp32_path))
    keep_float = rgb_convs(model)
    ranges = calibrate(model, photo_batches(photos, side), keep_float)
    # The ranges reach the quantizer as its calibration cache, so it does not run its own
    # (unoptimized, second) pass over the photos.
    data = {name: TensorData(lowest=np.float32(low), highest=np.float32(high)) for name, (low, high) in ranges.items()}
    with tempfile.TemporaryDirectory() as scratch, _quiet_root_logger():
        cache = Path(scratch) / "ranges.json"
        save_tensors_data(TensorsData(CalibrationMethod.Percentile, data), cache)
        quantize_static(
            model,
            str(out_path),
            calibration_cache_path=cache,
            calibrate_method=CalibrationMethod.Percentile,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=keep_float,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    precision = (
        f"int8 QDQ: per-channel 7-bit weights, uint8 activations, {CALIBRATION_PERCENTILE} percentile "
        f"ranges on {len(photos)} photos at {side}px; RGB convs float"
    )
    _save(onnx.load(str(out_path)), out_path, {**_metadata(model), "precision": precision})
    return out_path


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """Writes the float16 variant: float16 weights and (where the provider has float16 kernels)
    arithmetic, float32 input and output (casts at both ends), so it is fed and read exactly
    like the float file."""
    model = onnx.load(str(fp32_path))
    half = convert_float_to_float16(model, keep_io_types=True)
    # The converter appends its input casts after their consumers: valid for ONNX Runtime,
    # not for onnx.checker, which wants nodes in dependency order.
    OnnxModel.graph_topological_sort(half.graph, is_deterministic=True)
    _save(half, out_path, {**_metadata(model), "precision": "fp16, float32 input/output"})
    return out_path


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _save(model: onnx.ModelProto, path: Path, metadata: dict[str, str]) -> None:
    del model.metadata_props[:]
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path), save_as_external_data=False)


def psnr_db(expected: np.ndarray, got: np.ndarray) -> float:
    """PSNR of two images as delivered (rounded, clipped to 0..255; infinite when equal)."""
    a, b = (np.clip(np.rint(x), 0, 255).astype(np.float64) for x in (expected, got))
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def variant_quality(fp32_path: Path, variant_path: Path, photos: Sequence[Path], side: int) -> dict:
    """The variant against the float file on ``side``-px square crops of real photos, compared
    as they are delivered (rounded, clipped to 0..255): mean and worst PSNR over the photos,
    largest pixel difference."""
    return compare(fp32_path, {"variant": variant_path}, photos, side)["variant"]


def compare(fp32_path: Path, variants: dict[str, Path], photos: Sequence[Path], side: int) -> dict[str, dict]:
    """``variant_quality`` for several variants at once, running the float model once per photo."""
    reference = _session(Path(fp32_path))
    sessions = {kind: _session(Path(path)) for kind, path in variants.items()}
    name = reference.get_inputs()[0].name
    scores: dict[str, list[float]] = {kind: [] for kind in variants}
    worst = dict.fromkeys(variants, 0.0)
    for batch in photo_batches(photos, side):
        expected = np.clip(np.rint(reference.run(None, {name: batch})[0]), 0, 255)
        for kind, session in sessions.items():
            got = np.clip(np.rint(session.run(None, {name: batch})[0]), 0, 255)
            scores[kind].append(psnr_db(expected, got))
            worst[kind] = max(worst[kind], float(np.abs(expected - got).max()))
    return {
        kind: {"psnr_db": float(np.mean(psnr)), "psnr_min_db": float(min(psnr)), "max_abs_diff": worst[kind]}
        for kind, psnr in scores.items()
    }


def variant_path(float_path: Path, kind: str) -> Path:
    """``build/onnx/udnie.onnx`` -> ``build/onnx/udnie.int8.onnx`` (``kind`` in ``SUFFIXES``)."""
    return float_path.with_name(float_path.stem + SUFFIXES[kind])


def make_variants(
    float_path: Path,
    calibration_photos: Sequence[Path],
    check_photos: Sequence[Path],
    side: int = CHECK_SIDE,
) -> dict[str, dict]:
    """Writes the int8 and fp16 variants beside ``float_path`` and measures each against it
    on ``check_photos``. A variant under its ``MIN_PSNR_DB`` is deleted and ``VariantError``
    raised, like the float export's parity check. Returns the measurements by kind."""
    paths = {kind: variant_path(float_path, kind) for kind in SUFFIXES}
    quantize_int8(float_path, paths["int8"], calibration_photos)
    convert_fp16(float_path, paths["fp16"])
    report = compare(float_path, paths, check_photos, side)
    for kind, path in paths.items():
        if report[kind]["psnr_db"] < MIN_PSNR_DB[kind]:
            for stale in paths.values():
                stale.unlink(missing_ok=True)
            raise VariantError(
                f"{path.name}: {report[kind]['psnr_db']:.1f} dB PSNR against the float model "
                f"(< {MIN_PSNR_DB[kind]} dB) on {len(check_photos)} photos at {side}px"
            )
    return report
