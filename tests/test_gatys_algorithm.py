"""The Gatys algorithm on a random-weight VGG19 (the ImageNet file is not available here).

Random weights still give a well-defined objective, so these tests check the optimizer and
every option's effect on that objective, not artistic quality. Images are 48-64 px and most
runs use shallow layers so the module runs in seconds on 2 cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.codec import fit_max_side
from core.color import preserve_colors
from lossnet import (
    ARCHITECTURES,
    ENV_ALLOW_UNVERIFIED,
    VGG,
    LossNetwork,
    VGGWeightsMissing,
    find_weights,
    gram,
    load_vgg,
)
from optimize.losses import Objective
from optimize.transfer import TransferSettings, level_sizes, stylize, to_tensor
from tests.support.random_vgg import random_vgg, write_random_weights

from .conftest import SHARED

IMAGES = SHARED / "images"
VGG19 = ARCHITECTURES["vgg19"]
ENV_WEIGHTS = VGG19.env
#: Shallow layers: the options' effects show just as well and each iteration is cheap.
FAST = TransferSettings(
    iterations=12,
    max_side=48,
    seed=0,
    content_layers=("relu2_2",),
    style_layers=("relu1_1", "relu2_1", "relu3_1"),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, two busy processes with 2 OpenMP threads
    each run ~8x slower (measured), and these tiny images gain little from a second thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def features() -> VGG:
    return random_vgg("vgg19", seed=0)


def _load(path: Path) -> Image.Image:
    return fit_max_side(Image.open(path).convert("RGB"), 128)


@pytest.fixture(scope="module")
def content() -> Image.Image:
    return _load(IMAGES / "content/face.jpg")


@pytest.fixture(scope="module")
def wave() -> Image.Image:
    return _load(IMAGES / "styles/wave.jpg")


@pytest.fixture(scope="module")
def scream() -> Image.Image:
    return _load(IMAGES / "styles/scream.jpg")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _style_distance(features, image: Image.Image, style: Image.Image, settings: TransferSettings) -> float:
    """Unweighted style loss of ``image`` against one style, at ``image``'s size."""
    net = LossNetwork(features, settings.content_layers + settings.style_layers)
    side = max(image.size)
    objective = Objective(net, to_tensor(image, "cpu"), [to_tensor(fit_max_side(style, side), "cpu")], [1.0],
                          {name: 1.0 for name in settings.content_layers},
                          {name: 1.0 for name in settings.style_layers}, 1.0, 1.0, 0.0)
    with torch.no_grad():
        return float(objective.parts(to_tensor(image, "cpu"))["style"])


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_total_loss_halves_with_default_layers(features, content, wave, optimizer):
    settings = TransferSettings(iterations=15, max_side=48, seed=0, optimizer=optimizer)
    result = stylize(content, [wave], settings, features)
    totals = [row["total"] for row in result.history]
    assert result.stop_reason == "completed" and result.iterations_done == 15
    assert min(totals[-3:]) < 0.5 * totals[0]
    assert result.losses["total"] < 0.5 * totals[0]  # what is returned, not just what was seen


def test_output_bounded_by_max_side_and_valid(features, content, wave):
    result = stylize(content, [wave], FAST.replace(iterations=2), features)
    assert max(result.image.size) == 48 and result.image.mode == "RGB"
    ratio = content.width / content.height
    assert abs(result.image.width / result.image.height - ratio) < 0.05


def test_seed_reproduces_noise_init_and_differs_between_seeds(features, content, wave):
    settings = FAST.replace(init="noise", iterations=4)
    first = stylize(content, [wave], settings.replace(seed=7), features)
    again = stylize(content, [wave], settings.replace(seed=7), features)
    other = stylize(content, [wave], settings.replace(seed=8), features)
    assert np.array_equal(_pixels(first.image), _pixels(again.image))
    assert np.abs(_pixels(first.image) - _pixels(other.image)).mean() > 1.0
    assert first.seed == 7


def test_unseeded_run_reports_its_seed(features, content, wave):
    result = stylize(content, [wave], FAST.replace(seed=None, iterations=1), features)
    assert isinstance(result.seed, int)


def test_more_style_weight_lowers_style_loss(features, content, wave):
    low = stylize(content, [wave], FAST.replace(style_weight=1e3), features)
    high = stylize(content, [wave], FAST.replace(style_weight=1e8), features)
    high_distance = _style_distance(features, high.image, wave, FAST)
    assert high_distance < 0.7 * _style_distance(features, low.image, wave, FAST)


def test_preserve_colors_keep_content_chroma(features, content, wave):
    plain = stylize(content, [wave], FAST, features)
    kept = stylize(content, [wave], FAST.replace(preserve_colors=True), features)
    reference = fit_max_side(content, 48)

    def chroma_error(image: Image.Image) -> float:
        chroma = _pixels(image.convert("YCbCr"))[..., 1:]
        return np.abs(chroma - _pixels(reference.convert("YCbCr"))[..., 1:]).mean()

    assert chroma_error(kept.image) < 1.5
    assert chroma_error(plain.image) > 2 * chroma_error(kept.image)
    # The luminance is the stylized one, not the content's.
    assert np.abs(_pixels(kept.image.convert("L")) - _pixels(plain.image.convert("L"))).mean() < 2


def test_preserve_colors_takes_luma_from_styled_and_chroma_from_original():
    styled = Image.new("RGB", (8, 6), (200, 40, 40))
    original = Image.new("RGB", (16, 12), (40, 40, 200))
    out = preserve_colors(styled, original)
    assert out.size == styled.size
    y, cb, cr = out.convert("YCbCr").getpixel((3, 3))
    y_styled = styled.convert("YCbCr").getpixel((0, 0))[0]
    _, cb_orig, cr_orig = original.convert("YCbCr").getpixel((0, 0))
    assert abs(y - y_styled) <= 2 and abs(cb - cb_orig) <= 2 and abs(cr - cr_orig) <= 2


def test_style_blend_weights(features, content, wave, scream):
    only_wave = stylize(content, [wave], FAST, features)
    blend_1_0 = stylize(content, [wave, scream], FAST.replace(style_weights=(1.0, 0.0)), features)
    blend_half = stylize(content, [wave, scream], FAST.replace(style_weights=(0.5, 0.5)), features)
    assert np.array_equal(_pixels(only_wave.image), _pixels(blend_1_0.image))  # weight 0 = absent
    to_scream = _style_distance(features, blend_half.image, scream, FAST)
    assert to_scream < _style_distance(features, only_wave.image, scream, FAST)


def test_style_scale_changes_result(features, content, wave):
    normal = stylize(content, [wave], FAST, features)
    small = stylize(content, [wave], FAST.replace(style_scale=0.5), features)
    assert np.abs(_pixels(normal.image) - _pixels(small.image)).mean() > 1.0


def test_coarse_to_fine_runs_each_level_and_ends_at_full_size(features, content, wave):
    result = stylize(content, [wave], FAST.replace(max_side=64, scales=2, iterations=3), features)
    assert [row["level"] for row in result.history] == [1, 1, 1, 2, 2, 2]
    assert max(result.image.size) == 64 and result.iterations_done == 6
    assert level_sizes((64, 48), 3) == [(32, 24), (64, 48)]  # never below 32 px


def test_time_budget_returns_best_image_so_far(features, content, wave):
    deadline = time.monotonic() + 0.3
    result = stylize(content, [wave], FAST.replace(iterations=10_000), features, deadline=deadline)
    assert result.stop_reason == "time_budget"
    assert 1 <= result.iterations_done < 10_000 and max(result.image.size) == 48
    assert result.losses["total"] <= result.history[0]["total"]


def test_time_budget_is_shared_across_levels(features, content, wave):
    settings = FAST.replace(max_side=64, scales=2, iterations=10_000)
    budget = 2.0
    result = stylize(content, [wave], settings, features, deadline=time.monotonic() + budget)
    assert result.stop_reason == "time_budget" and max(result.image.size) == 64
    # The coarse level (1/5 of the pixels) stops near 1/5 of the budget, leaving the rest for the fine.
    coarse_end = max(row["elapsed"] for row in result.history if row["level"] == 1)
    assert coarse_end < 0.5 * budget


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optimizer": "sgd"}, "optimizer"),
        ({"style_weight": -1.0}, "style_weight"),
        ({"iterations": 0}, "iterations"),
        ({"content_layers": ("relu9_9",)}, "relu9_9"),
        ({"style_weights": (1.0, 2.0)}, "style_weights"),
        ({"init": "image"}, "init"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_parameter(features, content, wave, change, message):
    with pytest.raises(ValueError, match=message):
        stylize(content, [wave], FAST.replace(**change), features)


def test_loss_network_stops_at_deepest_layer_and_is_frozen(features):
    net = LossNetwork(features, ["relu2_1", "relu1_1"])
    assert len(net.stack) == VGG19.layer_names.index("relu2_1") + 1
    assert not any(p.requires_grad for p in net.parameters())
    out = net(torch.rand(1, 3, 32, 32))
    assert list(out) == ["relu1_1", "relu2_1"] and out["relu2_1"].shape == (1, 128, 16, 16)
    assert gram(out["relu1_1"]).shape == (1, 64, 64)  # one Gram for both paths: batched


def test_weights_lookup_never_falls_back_to_random(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path / "absent.pth"))
    monkeypatch.delenv(ENV_ALLOW_UNVERIFIED, raising=False)
    with pytest.raises(VGGWeightsMissing, match=ENV_WEIGHTS):
        find_weights(VGG19)
    path = write_random_weights(tmp_path / "random.pth", seed=3)
    monkeypatch.setenv(ENV_WEIGHTS, str(path))
    with pytest.raises(VGGWeightsMissing, match="dcbb9e9d"):
        load_vgg("vgg19")
    monkeypatch.setenv(ENV_ALLOW_UNVERIFIED, "1")
    loaded = load_vgg("vgg19")
    expected = random_vgg("vgg19", seed=3)
    assert torch.equal(loaded.features[0].weight, expected.features[0].weight)


def test_cli_writes_image_and_loss_plot(tmp_path, monkeypatch):
    from optimize.__main__ import main

    monkeypatch.setenv(ENV_WEIGHTS, str(write_random_weights(tmp_path / "vgg.pth")))
    monkeypatch.setenv(ENV_ALLOW_UNVERIFIED, "1")
    out = tmp_path / "out.png"
    code = main([str(IMAGES / "content/face.jpg"), str(IMAGES / "styles/wave.jpg"), "-o", str(out),
                 "--iterations", "2", "--max-side", "40", "--style-layers", "relu1_1,relu2_1",
                 "--content-layers", "relu2_1"])
    assert code == 0
    assert max(Image.open(out).size) == 40
    assert Image.open(tmp_path / "out-losses.png").format == "PNG"
