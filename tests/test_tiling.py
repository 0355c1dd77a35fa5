"""Tiled stylization (``core.tiling``) against the whole-image output of a real style on a
real photo: small images, small tiles, so that a few seconds cover many seams."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageOps
from ts.context import Context, RequestProcessor

from build_tools.archive import ROOT, package
from core import codec, tiling
from core.onnx_session import session_options
from core.stylizer import TilingPolicy
from core.tiling import Layout, TiledStylizer, plan
from core.tiling_graphs import compile_file, write_bundle
from core.torchserve import RUNTIME_HEADER
from export.quantize import psnr_db
from handlers.fast_style import FastStyleHandler
from stylize.__main__ import main

from .conftest import ONNX_DIR, ts_metrics

STYLE = "udnie"
HEIGHT, WIDTH = 384, 512
LAYOUT = Layout(tile=160, margin=32)  # 3 x 4 tiles: seams along 2 rows and 3 columns
#: Measured 65.5-69 dB over the six default styles (max |diff| 0.2-1.9 on 0..255, from the
#: float16 storage between passes). Statistics that are shared but approximate score 15-30.
MIN_PSNR_DB = 55.0


@pytest.fixture(scope="module")
def model(built_store):
    return ONNX_DIR / f"{STYLE}.onnx"


@pytest.fixture(scope="module")
def whole(model):
    session = ort.InferenceSession(str(model), sess_options=session_options(2), providers=["CPUExecutionProvider"])
    return lambda image: session.run(None, {"image": image[None]})[0][0]


@pytest.fixture(scope="module")
def stylizer(model) -> TiledStylizer:
    return TiledStylizer(model, LAYOUT, threads=2)


@pytest.fixture(scope="module")
def photo(content_photos) -> np.ndarray:
    image = ImageOps.fit(Image.open(content_photos[-1]).convert("RGB"), (WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    return codec.to_array(image)


@pytest.fixture(scope="module")
def outputs(photo, whole, stylizer) -> tuple[np.ndarray, np.ndarray]:
    return whole(photo), stylizer(photo)


def seam_mask(height: int, width: int, layout: Layout, band: int = 4) -> np.ndarray:
    """True within ``band`` pixels of a boundary between two tile cores."""
    mask = np.zeros((height, width), bool)
    for tile in plan(height, width, layout):
        y0, _, x0, _ = tile.core
        if y0:
            mask[max(0, y0 - band) : y0 + band, :] = True
        if x0:
            mask[:, max(0, x0 - band) : x0 + band] = True
    return mask


def seam_jump_ratio(got: np.ndarray, expected: np.ndarray, layout: Layout) -> float:
    """How much more ``got`` jumps across vertical tile boundaries than ``expected`` does
    there, relative to the same measure between all other neighbouring columns."""
    jumps = np.abs(np.diff(got, axis=2) - np.diff(expected, axis=2)).mean(axis=(0, 1))
    boundaries = sorted({t.core[2] - 1 for t in plan(got.shape[1], got.shape[2], layout) if t.core[2]})
    return float(jumps[boundaries].mean() / np.delete(jumps, boundaries).mean())


def test_tiled_matches_whole_image(outputs):
    expected, got = outputs
    assert got.shape == expected.shape == (3, HEIGHT, WIDTH)
    assert psnr_db(expected, got) >= MIN_PSNR_DB


def test_no_extra_error_at_seams(outputs):
    """The error next to tile boundaries is no larger than elsewhere (it is all rounding)."""
    expected, got = outputs
    error = np.abs(got - expected).mean(axis=0)
    seams = seam_mask(HEIGHT, WIDTH, LAYOUT)
    # Measured ratio 0.94-1.02 over the six default styles.
    assert error[seams].mean() <= 1.5 * error[~seams].mean(), (error[seams].mean(), error[~seams].mean())
    assert seam_jump_ratio(got, expected, LAYOUT) <= 1.5


def test_tiles_alone_would_show_seams(photo, whole, outputs):
    """The check above has teeth: tiles stylized one by one, each with its own statistics
    (margins included, so only the statistics differ), leave seams many times the rest."""
    expected, _ = outputs
    naive = np.zeros_like(expected)
    for tile in plan(HEIGHT, WIDTH, LAYOUT):
        (y0, y1, x0, x1), (oy0, oy1, ox0, ox1) = tile.core, tile.outer
        y1, x1 = min(y1, HEIGHT), min(x1, WIDTH)
        out = whole(np.ascontiguousarray(photo[:, oy0:oy1, ox0:ox1]))
        naive[:, y0:y1, x0:x1] = out[:, y0 - oy0 : y1 - oy0, x0 - ox0 : x1 - ox0]
    # Measured 3.9-7.4 and 17-23 dB over the six default styles and both photos.
    assert seam_jump_ratio(naive, expected, LAYOUT) > 3
    assert psnr_db(expected, naive) < 30


@pytest.mark.parametrize("size", [(97, 131), (161, 160), (203, 150), (10, 7)])
def test_any_size_comes_back_at_its_size(size, content_photos, whole):
    height, width = size
    image = ImageOps.fit(Image.open(content_photos[0]).convert("RGB"), (width, height), Image.Resampling.LANCZOS)
    array = codec.to_array(image)
    stylizer = _small_stylizer(whole)
    got = stylizer(array)
    assert got.shape == (3, height, width)
    assert psnr_db(whole(array), got) >= MIN_PSNR_DB


_SMALL: dict = {}


def _small_stylizer(whole) -> TiledStylizer:
    """48-px tiles with the smallest margin: seams every few dozen pixels, edge cases at
    every image border (and a 10x7 image padded by the network to 16x16)."""
    if "stylizer" not in _SMALL:
        _SMALL["stylizer"] = TiledStylizer(ONNX_DIR / f"{STYLE}.onnx", Layout(tile=48, margin=16), threads=2)
    return _SMALL["stylizer"]


def test_bundle_serves_without_the_onnx_package(model, tmp_path, outputs, photo):
    """The archive's bundle is all serving needs: a process where ``import onnx`` fails
    loads it and paints the same pixels as the stylizer compiled from the .onnx here."""
    served = tmp_path / f"{STYLE}.onnx"
    served.symlink_to(model)
    compile_file(model).save(tiling.bundle_path(served))
    np.save(tmp_path / "photo.npy", photo)
    script = (
        "import sys; sys.modules['onnx'] = None\n"
        "import numpy as np\n"
        "from core.tiling import Layout, TiledStylizer\n"
        f"out = TiledStylizer({str(served)!r}, Layout({LAYOUT.tile}, {LAYOUT.margin}), threads=2)"
        f"(np.load({str(tmp_path / 'photo.npy')!r}))\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=120)
    assert np.array_equal(np.load(tmp_path / "out.npy"), outputs[1])


def test_a_stale_bundle_is_not_used(model, tmp_path):
    """A bundle made from another model (say, the .onnx was re-exported alone) is rebuilt."""
    served = tmp_path / "style.onnx"
    shutil.copy(ONNX_DIR / "wave.onnx", served)
    write_bundle(served)
    shutil.copy(model, served)
    assert tiling.load_program(served).model_sha256 == tiling.sha256_of(model)


def test_archive_carries_the_tiling_code_and_bundle(model, tmp_path):
    served = tmp_path / f"{STYLE}.onnx"
    shutil.copy(model, served)
    write_bundle(served)
    config = tmp_path / "config.yaml"
    config.write_text("minWorkers: 1\n")
    archive = package(STYLE, ROOT / "handlers" / "fast_style.py", served, [], config, tmp_path / "store")
    with zipfile.ZipFile(archive) as mar:
        names = set(mar.namelist())
    assert {"core/tiling.py", "core/tiling_graphs.py", f"{STYLE}.tiling.npz", f"{STYLE}.onnx"} <= names


def test_plan_cores_cover_the_padded_image_once():
    counts = np.zeros((tiling.padded(203), tiling.padded(97)), int)
    for tile in plan(203, 97, Layout(tile=64, margin=16)):
        y0, y1, x0, x1 = tile.core
        counts[y0:y1, x0:x1] += 1
    assert (counts == 1).all()


@pytest.mark.parametrize("bad", [{"tile": 102}, {"margin": 8}, {"tile": 8}])
def test_bad_layouts_are_refused(bad):
    with pytest.raises(ValueError, match="multiples"):
        Layout(**bad)


def test_threshold_env_beats_config_beats_default(monkeypatch):
    monkeypatch.delenv(tiling.THRESHOLD_ENV, raising=False)
    assert tiling.threshold() == tiling.DEFAULT_THRESHOLD
    assert tiling.threshold(1000) == 1000
    monkeypatch.setenv(tiling.THRESHOLD_ENV, "500")
    assert tiling.threshold(1000) == 500
    assert tiling.wants_tiles(20, 30, None, 500) and not tiling.wants_tiles(20, 20, None, 500)
    assert not tiling.wants_tiles(4096, 4096, False, 500) and tiling.wants_tiles(2, 2, True, 500)


@pytest.mark.parametrize("bad", ["4M", "-1", "0", "2.5"])
def test_malformed_threshold_names_the_setting(monkeypatch, bad):
    monkeypatch.delenv(tiling.THRESHOLD_ENV, raising=False)
    with pytest.raises(ValueError, match=r"handler\.tile_threshold must be a positive whole number"):
        tiling.threshold(bad)
    monkeypatch.setenv(tiling.THRESHOLD_ENV, bad)
    with pytest.raises(ValueError, match=r"\$STYLE_TILE_THRESHOLD must be a positive whole number"):
        tiling.threshold(1000)


# ---------------------------------------------------------------------------------------
# Handler and CLI
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def handler(built_store):
    manifest = {"model": {"modelName": STYLE, "serializedFile": f"{STYLE}.onnx"}}
    context = Context(STYLE, str(ONNX_DIR), manifest, 1, None, "0.12.0", metrics=ts_metrics())
    handler = FastStyleHandler()
    handler.initialize(context)
    return handler, context


def _png(array: np.ndarray) -> bytes:
    return codec.encode(codec.from_array(array), "png")


def test_handler_forced_tiling_returns_the_same_image(handler, photo, monkeypatch):
    """Tiled on the chosen runtime (whatever it is here) = whole-image on that runtime."""
    handler, context = handler
    stylizer = handler.stylizer
    monkeypatch.setattr(stylizer, "tiling", TilingPolicy(stylizer.tiling.threshold, Layout(tile=96, margin=16)))
    monkeypatch.setattr(stylizer, "_tiler", None)
    crop = np.ascontiguousarray(photo[:, :150, :201])  # PNG: the handler sees these pixels
    context.request_processor = [RequestProcessor({"body": {"content-type": "image/png"}, "X-Tile": "true"})]
    [out] = handler.handle([{"body": bytearray(_png(crop))}], context)
    assert context.get_response_status(0)[0] in (None, 200)
    assert stylizer._tiler is not None  # the request really went the tiled way
    assert context.get_response_headers(0).get(RUNTIME_HEADER) == stylizer.runtime
    image = Image.open(io.BytesIO(out))
    assert image.format == "PNG" and image.size == (201, 150)
    expected = stylizer.run(codec.to_array(codec.from_array(crop))[None])[0]
    assert psnr_db(expected, codec.to_array(image.convert("RGB"))) >= MIN_PSNR_DB - 10  # both rounded


def test_handler_tiles_automatically_above_its_threshold(handler, small_photo, monkeypatch):
    handler, context = handler
    calls = []
    stylizer = handler.stylizer
    monkeypatch.setattr(stylizer, "tiling", TilingPolicy(small_photo.width * small_photo.height - 1))
    monkeypatch.setattr(type(stylizer), "tiler", property(lambda self: lambda array, extra: calls.append(1) or array))
    context.request_processor = [RequestProcessor({"body": {"content-type": "image/png"}}) for _ in range(2)]
    png = _png(codec.to_array(small_photo))
    rows = [{"body": bytearray(png)}, {"image": bytearray(png), "tile": b"false"}]
    out = handler.handle(rows, context)
    assert calls == [1] and all(isinstance(o, bytes) for o in out)


def test_handler_bad_tile_value_is_a_400(handler, small_photo):
    handler, context = handler
    context.request_processor = [RequestProcessor({"body": {"content-type": "application/json"}})]
    body = {"image": base64.b64encode(_png(codec.to_array(small_photo))).decode(), "tile": "sometimes"}
    [out] = handler.handle([{"body": body}], context)
    assert context.get_response_status(0)[0] == 400
    assert "tile" in json.loads(out)["message"]


def test_cli_tile_option(tmp_path, content_photos, monkeypatch, capsys):
    """``--tile on`` tiles even a small photo, with the pixels of ``--tile off``."""
    image = Image.open(content_photos[0]).convert("RGB")
    image.thumbnail((96, 96))
    source = tmp_path / "in.png"
    image.save(source)
    calls = []
    tiled_call = TiledStylizer.__call__
    monkeypatch.setattr(TiledStylizer, "__call__",
                        lambda self, array, extra=None: calls.append(1) or tiled_call(self, array, extra))
    results = {}
    for mode in ("on", "off"):
        out = tmp_path / mode
        reference = ["--backend", "onnxruntime", "--precision", "fp32"]
        assert main([str(source), "-o", str(out), "--style", STYLE, "--tile", mode, "--no-progress", *reference]) == 0
        results[mode] = codec.to_array(Image.open(out / "in.png").convert("RGB"))
    capsys.readouterr()
    assert calls == [1]
    assert np.abs(results["on"] - results["off"]).max() <= 1


def test_cli_names_a_malformed_threshold(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(tiling.THRESHOLD_ENV, "4M")
    source = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(source)
    assert main([str(source), "-o", str(tmp_path / "out"), "--style", STYLE, "--no-progress"]) == 2
    assert "$STYLE_TILE_THRESHOLD must be a positive whole number of pixels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
