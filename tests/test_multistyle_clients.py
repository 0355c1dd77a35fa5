"""The licence-clean models outside TorchServe: the page's local fallback and the batch CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from app import licence_clean
from app.client import ClientError, FastOptions
from core import codec, multistyle

from .conftest import ONNX_DIR, SHARED, assert_no_metadata, jpeg_with_metadata

NO_SERVER = "http://127.0.0.1:9"  # discard port: nothing listens, so the page paints locally


def test_page_paints_a_blend_locally_like_the_model(content_photos):
    photo = content_photos[0].read_bytes()
    outcome = licence_clean.stylize_multistyle(photo, "3:0.5,12:0.5", FastOptions(max_side=96), NO_SERVER, ONNX_DIR)
    assert outcome.backend == "local" and "multistyle" in outcome.note
    before = codec.decode(photo, max_side=96)
    assert outcome.after.size == before.size
    with pytest.raises(ClientError, match="out of range"):
        licence_clean.stylize_multistyle(photo, "30", FastOptions(max_side=96), NO_SERVER, ONNX_DIR)


def test_page_paints_with_your_own_style_image_locally(content_photos):
    photo = content_photos[1].read_bytes()
    painting = (SHARED / "images" / "styles" / "wave.jpg").read_bytes()
    outcome = licence_clean.stylize_own_style(photo, painting, FastOptions(max_side=96), NO_SERVER, ONNX_DIR)
    assert outcome.backend == "local" and outcome.after.size == outcome.before.size
    assert np.abs(codec.to_array(outcome.after) - codec.to_array(outcome.before)).mean() > 10
    with pytest.raises(ClientError, match="style image"):
        licence_clean.stylize_own_style(photo, b"not an image", FastOptions(max_side=96), NO_SERVER, ONNX_DIR)


def test_thumbnails_come_from_the_contact_sheet():
    tiles = licence_clean.thumbnails()
    assert tiles is not None and len(tiles) == multistyle.NUM_STYLES
    # Tiles are distinct pictures, not blank cells of the sheet.
    assert all(np.asarray(tile).std() > 10 for tile in tiles)
    assert len({np.asarray(tile).tobytes() for tile in tiles}) == multistyle.NUM_STYLES


def test_multistyle_painter_refuses_tiling(small_photo):
    painter = licence_clean._multistyle(ONNX_DIR)
    with pytest.raises(codec.InputError, match="tiling"):
        painter.paint([small_photo], [{"tile": True, "strength": 1.0, "preserve_colors": False}])
    buffer = io.BytesIO()
    small_photo.save(buffer, "PNG")
    out = painter.stylize_bytes(buffer.getvalue(), {"format": "png", "strength": 1.0, "preserve_colors": False})
    assert Image.open(io.BytesIO(out)).size == small_photo.size


def _small_jpeg(content_photos, tmp_path) -> Path:
    path = tmp_path / "in" / "photo.jpg"
    path.parent.mkdir()
    codec.decode(content_photos[0].read_bytes(), max_side=96).save(path, "JPEG", quality=95)
    return path


def test_cli_paints_one_of_the_26_styles_like_the_model(content_photos, tmp_path):
    from stylize.__main__ import main

    photo = _small_jpeg(content_photos, tmp_path)
    assert main([str(photo), "-o", str(tmp_path / "out"), "--style", "multistyle:19", "--backend", "onnxruntime",
                 "--precision", "fp32"]) == 0
    painted = np.asarray(Image.open(tmp_path / "out" / "photo.png"), np.float32).transpose(2, 0, 1)
    session = ort.InferenceSession(str(ONNX_DIR / "multistyle.onnx"), providers=["CPUExecutionProvider"])
    source = codec.decode(photo.read_bytes())
    expected = session.run(None, {"image": codec.to_array(source)[None], "style_weights": multistyle.parse_style(19)})
    assert np.abs(painted - expected[0][0]).max() <= 1.0


def test_cli_paints_with_a_style_image_and_refuses_bad_specs(content_photos, tmp_path, capsys):
    from stylize.__main__ import main

    photo = _small_jpeg(content_photos, tmp_path)
    painting = SHARED / "images" / "styles" / "udnie.jpg"
    assert main([str(photo), "-o", str(tmp_path / "out"), "--style-image", str(painting), "--strength", "0.8"]) == 0
    assert Image.open(tmp_path / "out" / "photo.png").size == Image.open(photo).size
    assert main([str(photo), "-o", str(tmp_path / "bad"), "--style", "multistyle:3:-1"]) == 2
    assert "non-negative" in capsys.readouterr().err
    assert main([str(photo), "-o", str(tmp_path / "bad"), "--style-image", str(photo), "--tile", "on"]) == 2
    assert "no tiling" in capsys.readouterr().err


@pytest.mark.parametrize("style", [["--style", "multistyle:19"], ["--style-image", "udnie.jpg"]],
                         ids=["multistyle", "style-image"])
def test_cli_paintings_carry_none_of_the_photos_metadata(small_photo, tmp_path, style):
    from stylize.__main__ import main

    photo = tmp_path / "in" / "phone.jpg"
    photo.parent.mkdir()
    photo.write_bytes(jpeg_with_metadata(small_photo))
    if style[0] == "--style-image":
        style = [style[0], str(SHARED / "images" / "styles" / style[1])]
    for fmt in ("jpeg", "png"):
        out = tmp_path / fmt
        assert main([str(photo), "-o", str(out), *style, "--strength", "0.5", "--format", fmt, "--no-progress"]) == 0
        [painting] = out.iterdir()
        assert_no_metadata(painting.read_bytes())


# --- the page, through AppTest ------------------------------------------------------------------

APP = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"


def _page(monkeypatch, url: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STYLE_SERVER_URL", url)
    return AppTest.from_file(str(APP), default_timeout=60).run()


def test_page_paints_a_blend_of_the_26_styles(monkeypatch, content_photos):
    at = _page(monkeypatch, NO_SERVER)
    at.radio(key="collection").set_value("26 styles (Apache-2.0)").run()
    assert len([image for image in at.image]) == multistyle.NUM_STYLES  # the thumbnails
    at.selectbox(key="multistyle").set_value(3)
    at.selectbox(key="multistyle_blend").set_value(12).run()
    at.slider(key="multistyle_share").set_value(0.25)
    at.slider(key="fast_size").set_value(64)
    at.file_uploader(key="photo").upload("photo.jpg", content_photos[0].read_bytes(), "image/jpeg")
    at = at.run().button(key="stylize").click().run()
    assert not at.exception and not at.error
    assert "Stylized locally with" in at.info[0].value and "multistyle" in at.info[0].value
    assert [image.captions for image in at.image][-2:] == [["Before"], ["After"]]


def test_page_paints_your_own_style_image_through_the_server(monkeypatch, server, content_photos):
    at = _page(monkeypatch, server.inference_url)
    at.radio(key="method").set_value("Your own style image (fast)").run()
    assert at.button(key="stylize").disabled  # a style image is needed too
    painting = (SHARED / "images" / "styles" / "scream.jpg").read_bytes()
    at.file_uploader(key="fast_style_image").upload("scream.jpg", painting, "image/jpeg")
    at.slider(key="own_size").set_value(64)
    at.file_uploader(key="photo").upload("photo.jpg", content_photos[1].read_bytes(), "image/jpeg")
    at = at.run().button(key="stylize").click().run()
    assert not at.exception and not at.error
    assert "TorchServe" in at.main.success[0].value and "'arbitrary'" in at.main.success[0].value
