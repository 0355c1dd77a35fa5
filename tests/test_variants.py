"""The reduced-precision ONNX variants: really int8 / fp16, fed like the float file, and close to it.

Uses the variants the build wrote (``build/onnx/<style>.int8.onnx`` ...) when present, else
makes them here from the float file, so the checks hold for whatever the build produces.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from core import tiling
from core.photos import default_parity_photo
from core.tiling_graphs import compile_file
from export.quantize import (
    EQUALIZING_TOLERANCE,
    MIN_PSNR_DB,
    calibrate,
    convert_fp16,
    photo_batches,
    psnr_db,
    quantize_int8,
    rgb_convs,
    variant_path,
    variant_quality,
)
from stylize.__main__ import main

from .conftest import ONNX_DIR

STYLE = "udnie"
#: Photo side for the quality checks: small enough for seconds, large enough for real texture.
SIDE = 192


@pytest.fixture(scope="module")
def float_model() -> Path:
    path = ONNX_DIR / f"{STYLE}.onnx"
    if not path.exists():
        pytest.fail(f"{path} missing: run scripts/build.sh first (scripts/test.sh does)")
    return path


@pytest.fixture(scope="module")
def variants(float_model, content_photos, tmp_path_factory) -> dict[str, Path]:
    built = {kind: variant_path(float_model, kind) for kind in ("int8", "fp16")}
    if all(path.exists() for path in built.values()):
        return built
    out = tmp_path_factory.mktemp("variants")
    return {
        "int8": quantize_int8(float_model, out / f"{STYLE}.int8.onnx", content_photos),
        "fp16": convert_fp16(float_model, out / f"{STYLE}.fp16.onnx"),
    }


def _io_types(model: onnx.ModelProto) -> list[tuple[str, int]]:
    return [(v.name, v.type.tensor_type.elem_type) for v in [*model.graph.input, *model.graph.output]]


def _check_self_contained(path: Path) -> onnx.ModelProto:
    assert not path.with_name(path.name + ".data").exists()
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_location == TensorProto.DEFAULT for t in model.graph.initializer)
    assert _io_types(model) == [("image", TensorProto.FLOAT), ("stylized", TensorProto.FLOAT)]
    assert {p.key: p.value for p in model.metadata_props}["style"] == STYLE
    return model


def test_int8_file_holds_int8_convolutions_that_onnx_runtime_fuses(variants, float_model, tmp_path):
    model = _check_self_contained(variants["int8"])
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = {t.name: t for t in model.graph.initializer}
    convs = [node for node in onnx.load(str(float_model)).graph.node if node.op_type == "Conv"]
    int8_weights = {name: t for name, t in weights.items() if t.data_type == TensorProto.INT8 and len(t.dims) == 4}
    # Every conv but the two RGB ones, with per-channel weights (one scale per output channel).
    assert len(int8_weights) == len(convs) - 2 == 12
    dequantized = {n.input[0]: weights[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert all(list(dequantized[name].dims) == list(t.dims[:1]) for name, t in int8_weights.items())
    float_convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] in weights]
    assert sorted(float_convs) == sorted(rgb_convs(onnx.load(str(float_model))))
    # What makes it fast: ONNX Runtime turns each DQ -> Conv -> Q into one integer QLinearConv.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(variants["int8"]), options, providers=["CPUExecutionProvider"])
    optimized = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert optimized.count("QLinearConv") == 12


def test_fp16_file_holds_float16_weights_behind_float32_io(variants):
    model = _check_self_contained(variants["fp16"])
    types = [t.data_type for t in model.graph.initializer if len(t.dims) == 4]
    assert types and set(types) == {TensorProto.FLOAT16}
    assert [n.op_type for n in model.graph.node].count("Cast") >= 2  # float32 in, float32 out


@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_variant_is_close_to_the_float_model_on_real_photos(kind, variants, float_model, content_photos):
    photos = [*content_photos, default_parity_photo()]  # the last one is never used for calibration
    quality = variant_quality(float_model, variants[kind], photos, SIDE)
    assert quality["psnr_min_db"] >= MIN_PSNR_DB[kind], quality
    session = ort.InferenceSession(str(variants[kind]), providers=["CPUExecutionProvider"])
    odd = np.random.default_rng(0).uniform(0, 255, (2, 3, 37, 51)).astype(np.float32)
    assert session.run(None, {"image": odd})[0].shape == odd.shape  # dynamic batch and size kept


def test_channel_equalization_leaves_the_float_output_unchanged(float_model, content_photos):
    model = onnx.load(str(float_model))
    equalized = copy.deepcopy(model)
    ranges = calibrate(equalized, photo_batches(content_photos, 128), rgb_convs(model))
    assert sum(t.name.endswith(".equalized_bias") for t in equalized.graph.initializer) == 12
    assert all(low <= high for low, high in ranges.values())
    x = photo_batches([default_parity_photo()], 160)[0]  # a photo calibration did not see
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(equalized.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(before.run(None, {"image": x})[0] - after.run(None, {"image": x})[0]).max() <= EQUALIZING_TOLERANCE


def test_build_records_the_variants_quality():
    record_path = ONNX_DIR / "variants.json"
    if not variant_path(ONNX_DIR / f"{STYLE}.onnx", "int8").exists():
        pytest.skip("variants not built (scripts/build.sh --no-variants)")
    entry = json.loads(record_path.read_text())[STYLE]
    assert entry["fingerprint"] and entry["calibration_photos"]
    for kind, floor in MIN_PSNR_DB.items():
        assert entry[kind]["psnr_db"] >= floor
        # the record describes the files on disk, not an earlier build of them
        assert entry["bytes"][kind] == variant_path(ONNX_DIR / f"{STYLE}.onnx", kind).stat().st_size


# ---------------------------------------------------------------------------------------
# Variants and tiling (the CLI tiles any float-input ONNX file it is given)
# ---------------------------------------------------------------------------------------

#: int8 tiled vs int8 whole-image: measured 40.5-47 dB over the six styles and both photos
#: (256x192 in 64 px tiles). Tiling stores tensors in float16 between passes, and a value
#: nudged across a quantization step moves one int8 level; per-tile statistics score < 30.
MIN_TILED_INT8_PSNR_DB = 36.0


def test_int8_variant_tiles_like_its_whole_image(variants, float_model, content_photos):
    photo = photo_batches([content_photos[0]], 256)[0][0]
    int8 = ort.InferenceSession(str(variants["int8"]), providers=["CPUExecutionProvider"])
    whole = int8.run(None, {"image": photo[None]})[0][0]
    tiled = tiling.TiledStylizer(variants["int8"], tiling.Layout(tile=64, margin=32), threads=2)(photo)
    assert tiled.shape == whole.shape == photo.shape
    assert psnr_db(whole, tiled) >= MIN_TILED_INT8_PSNR_DB
    float_whole = ort.InferenceSession(str(float_model), providers=["CPUExecutionProvider"]).run(
        None, {"image": photo[None]})[0][0]
    assert psnr_db(float_whole, tiled) >= MIN_PSNR_DB["int8"]  # still the variant it claims to be


def test_fp16_variant_refuses_tiling_by_name(variants, tmp_path, capsys):
    """Tiling rewrites graphs in float32; the GPU variant computes in float16 and is refused
    with a message naming the way out, by the compiler and by ``stylize --tile on``."""
    with pytest.raises(ValueError, match="tiling runs float32 graphs only, and this one computes in float16"):
        compile_file(variants["fp16"])
    source = tmp_path / "in.png"
    source.write_bytes(b"")  # never read: the model is refused before the batch starts
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(variants["fp16"]),
                 "--tile", "on", "--no-progress"]) == 2
    assert "float32 graphs only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
