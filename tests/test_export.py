"""The exported ONNX files: self-contained, valid, dynamic, and equal to PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from core import codec
from export.onnx_export import OPSET, ParityError, check_parity
from export.weights import load_engstrom
from networks import SizePreserving

from .conftest import DEFAULT_STYLES, ONNX_DIR


@pytest.mark.parametrize("style", DEFAULT_STYLES)
def test_onnx_files_are_valid_self_contained_and_checked(style, built_store):
    for path, dtype, dims in (
        (ONNX_DIR / f"{style}.onnx", onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"]),
        (ONNX_DIR / f"{style}.uint8.onnx", onnx.TensorProto.UINT8, ["height", "width", 3]),
    ):
        assert not path.with_name(path.name + ".data").exists()
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model, full_check=True)
        assert all(not t.HasField("data_location") or t.data_location == 0 for t in model.graph.initializer)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= max(17, OPSET)
        for value in (model.graph.input[0], model.graph.output[0]):
            shape = value.type.tensor_type
            assert shape.elem_type == dtype
            assert [d.dim_param or d.dim_value for d in shape.shape.dim] == dims
        assert [i.name for i in model.graph.input] == ["image"]
        assert [o.name for o in model.graph.output] == ["stylized"]
        assert {p.key: p.value for p in model.metadata_props}["style"] == style
    report = json.loads((ONNX_DIR / f"{style}.parity.json").read_text())
    assert report["max_abs_diff_float"] <= 1.0 and report["max_abs_diff_uint8"] <= 1.0


def test_onnx_matches_pytorch_on_real_photos_at_odd_sizes(mirror, content_photos, built_store):
    net = SizePreserving(load_engstrom(mirror / "engstrom" / "wave"))
    session = ort.InferenceSession(str(ONNX_DIR / "wave.onnx"), providers=["CPUExecutionProvider"])
    uint8 = ort.InferenceSession(str(ONNX_DIR / "wave.uint8.onnx"), providers=["CPUExecutionProvider"])
    for photo, side in zip(content_photos, (161, 203), strict=False):
        image = codec.fit_max_side(Image.open(photo).convert("RGB"), side)
        x = codec.to_array(image)[None]
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        got = session.run(None, {"image": x})[0]
        assert got.shape == x.shape
        assert np.abs(got - expected).max() <= 1.0
        pixels = uint8.run(None, {"image": np.asarray(image)})[0]
        assert pixels.dtype == np.uint8 and pixels.shape == (image.height, image.width, 3)
        assert np.abs(pixels.astype(np.float32) - np.rint(expected[0].transpose(1, 2, 0))).max() <= 1.0


def test_batch_of_two_equals_two_singles(built_store, small_photo):
    session = ort.InferenceSession(str(ONNX_DIR / "udnie.onnx"), providers=["CPUExecutionProvider"])
    a = codec.to_array(small_photo)
    b = codec.to_array(small_photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    batch = session.run(None, {"image": np.stack([a, b])})[0]
    for single, row in zip((a, b), batch, strict=True):
        assert np.abs(session.run(None, {"image": single[None]})[0][0] - row).max() <= 1e-2


def test_parity_check_fails_loudly_when_onnx_and_pytorch_differ(mirror, content_photos, built_store):
    net = load_engstrom(mirror / "engstrom" / "udnie")
    with torch.no_grad():
        net.conv_out.norm.shift.add_(0.05)  # a small change to the network the ONNX came from
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(net, ONNX_DIR / "udnie.onnx", ONNX_DIR / "udnie.uint8.onnx", content_photos[0], max_side=96)


def test_archives_are_self_contained(built_store):
    """A stock TorchServe needs nothing from this repo: handler, core package, ONNX, config."""
    import zipfile

    for style in DEFAULT_STYLES:
        with zipfile.ZipFile(built_store / f"{style}.mar") as archive:
            names = set(archive.namelist())
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        assert {"fast_style.py", f"{style}.onnx", "core/codec.py", "core/request.py", "core/color.py"} <= names
        assert manifest["model"]["modelName"] == style and manifest["model"]["handler"] == "fast_style.py"
        assert not any(name.endswith((".pth", "Variable")) for name in names)
