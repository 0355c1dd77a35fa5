"""The engine choice: fastest candidate above the quality floor, explicit settings honoured,
bad settings refused by name; and each real backend x precision on real photos.

The choice logic runs on fake engines and a fake clock (each engine advances the clock by
its own run time), so which candidate wins never depends on how busy this machine is.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from core import codec, engines, runtime_choice
from core.engines import Candidate, open_engine
from core.runtime_choice import RuntimeSettings, SettingError, choose, psnr_db
from core.stylizer import Stylizer

from .conftest import ONNX_DIR

REFERENCE_OUT = np.full((1, 3, 8, 8), 100.0, np.float32)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Runs in ``seconds`` of fake time; its output is off the reference by ``error`` levels
    on one pixel of 64, which sets its PSNR."""

    input_names = ("image",)

    def __init__(self, candidate: Candidate, seconds: float, error: float, clock: FakeClock):
        self.candidate, self.seconds, self.error, self.clock = candidate, seconds, error, clock

    def run(self, feeds, shrink=False):
        self.clock.now += self.seconds
        out = REFERENCE_OUT.copy()
        out[0, 0, 0, 0] += self.error
        return [out]


ORT32 = Candidate("onnxruntime", "fp32")
ORT8 = Candidate("onnxruntime", "int8")
OV32 = Candidate("openvino", "fp32")
OV16 = Candidate("openvino", "bf16")
OV8 = Candidate("openvino", "int8")


def _pick(timings: dict[Candidate, tuple[float, float]], settings: RuntimeSettings, recorded=None):
    """Runs ``choose`` over fake engines: candidate -> (seconds per run, error in levels)."""
    clock = FakeClock()
    opened: list[Candidate] = []

    def open_candidate(candidate: Candidate):
        opened.append(candidate)
        seconds, error = timings[candidate]
        return FakeEngine(candidate, seconds, error, clock)

    choice = choose(list(timings), settings, open_candidate, {"image": REFERENCE_OUT}, clock, recorded)
    return choice, opened


def _psnr_of(error: float) -> float:
    return 10 * math.log10(255.0**2 / (error**2 / (3 * 64)))


# Errors that put a candidate at: ~71 dB (fp32-like), ~47 dB (bf16-like), ~41 dB (int8-like).
FP32_ERR, BF16_ERR, INT8_ERR = 1.0, 16.0, 30.0
MACHINE = {ORT32: (0.40, 0), ORT8: (0.22, INT8_ERR), OV32: (0.34, FP32_ERR), OV16: (0.17, BF16_ERR),
           OV8: (0.12, INT8_ERR)}


def test_fake_errors_land_where_intended():
    assert _psnr_of(FP32_ERR) > 60 and 45 < _psnr_of(BF16_ERR) < 50 and 36 < _psnr_of(INT8_ERR) < 45


def test_fastest_candidate_above_the_floor_wins():
    choice, _ = _pick(MACHINE, RuntimeSettings())
    assert choice.candidate == OV16  # int8 is faster but below the 45 dB default floor
    by_label = {m.label: m for m in choice.measurements}
    assert by_label["openvino/bf16"].seconds == pytest.approx(0.17)
    assert by_label["onnxruntime/fp32"].psnr_db == math.inf
    assert by_label["openvino/int8"].psnr_db == pytest.approx(_psnr_of(INT8_ERR), abs=0.01)


def test_lower_floor_admits_int8():
    choice, _ = _pick(MACHINE, RuntimeSettings(min_psnr_db=30))
    assert choice.candidate == OV8


def test_build_record_of_a_variant_file_bounds_its_quality():
    """int8 looks fine on the measuring photo (fp32-like error) but the build's real check
    photos recorded 41 dB: it must not pass the 45 dB floor; bf16 (no file) is unaffected."""
    machine = {**MACHINE, OV8: (0.12, FP32_ERR), ORT8: (0.22, FP32_ERR)}
    choice, _ = _pick(machine, RuntimeSettings(), recorded={"int8": 41.0})
    assert choice.candidate == OV16
    assert {m.label: m.psnr_db for m in choice.measurements}["openvino/int8"] == 41.0
    choice, _ = _pick(machine, RuntimeSettings(), recorded={"int8": 47.0})
    assert choice.candidate == OV8


def test_without_bf16_the_ranking_changes():
    """An AVX2-only machine: no bf16 candidate; OpenVINO fp32 wins if it is faster there."""
    machine = {c: t for c, t in MACHINE.items() if c != OV16}
    choice, _ = _pick(machine, RuntimeSettings())
    assert choice.candidate == OV32


def test_none_passing_falls_back_to_the_reference():
    machine = {ORT32: (0.40, 0), OV16: (0.17, INT8_ERR), OV8: (0.12, INT8_ERR)}
    choice, _ = _pick(machine, RuntimeSettings())
    assert choice.candidate == ORT32


def test_reference_faster_than_everything_wins():
    machine = {ORT32: (0.10, 0), OV32: (0.34, FP32_ERR), OV16: (0.17, BF16_ERR)}
    choice, _ = _pick(machine, RuntimeSettings())
    assert choice.candidate == ORT32


def test_explicit_backend_and_precision_are_honoured():
    choice, opened = _pick(MACHINE, RuntimeSettings(backend="onnxruntime", precision="int8"))
    assert choice.candidate == ORT8  # its own floor (36 dB) is not the auto floor
    assert set(opened) == {ORT32, ORT8}  # only the reference (for quality) and the asked-for one
    choice, _ = _pick(MACHINE, RuntimeSettings(backend="openvino"))
    assert choice.candidate == OV16
    choice, _ = _pick(MACHINE, RuntimeSettings(precision="fp32"))
    assert choice.candidate == OV32


def test_explicit_floor_nothing_meets_is_refused_by_name():
    with pytest.raises(SettingError, match="min_psnr_db 75"):
        _pick(MACHINE, RuntimeSettings(backend="openvino", min_psnr_db=75))


def test_precision_the_machine_lacks_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(engines, "openvino_cpu_has_bf16", lambda: False)
    found = [ORT32, ORT8, OV32]
    with pytest.raises(SettingError, match="bf16 asked for, but this CPU has no BF16"):
        runtime_choice.wanted(found, RuntimeSettings(precision="bf16"))
    with pytest.raises(SettingError, match="fp16 needs a GPU"):
        runtime_choice.wanted(found, RuntimeSettings(precision="fp16"))
    assert runtime_choice.wanted(found, RuntimeSettings()) == found  # auto never fails for lack of bf16


@pytest.mark.parametrize(
    ("config", "env", "named"),
    [
        ({"backend": "tensorrt"}, {}, "handler.backend must be one of auto, onnxruntime, openvino"),
        ({}, {"STYLE_PRECISION": "fp64"}, r"\$STYLE_PRECISION must be one of auto, fp32, bf16, int8, fp16"),
        ({"min_psnr_db": "high"}, {}, "handler.min_psnr_db must be a positive number of dB"),
        ({}, {"STYLE_MIN_PSNR_DB": "-3"}, r"\$STYLE_MIN_PSNR_DB must be a positive number of dB"),
        ({"threads": "two"}, {}, "handler.threads must be a whole number of threads"),
    ],
)
def test_malformed_settings_are_refused_by_name(config, env, named):
    with pytest.raises(SettingError, match=named):
        RuntimeSettings.from_config(config, env)


def test_environment_wins_over_the_model_config():
    config = {"backend": "openvino", "precision": "bf16"}
    settings = RuntimeSettings.from_config(config, {"STYLE_BACKEND": "onnxruntime"})
    assert settings.backend == "onnxruntime" and settings.precision == "bf16"


def test_choice_is_cached_per_machine(built_store, tmp_path, monkeypatch):
    """A second open of the same model reads the cached choice and measures nothing."""
    first = Stylizer(ONNX_DIR / "udnie.onnx", cache=tmp_path)
    assert not first.choice.cached and first.choice.measurements
    monkeypatch.setattr(runtime_choice, "choose", lambda *a, **k: pytest.fail("measured again"))
    second = Stylizer(ONNX_DIR / "udnie.onnx", cache=tmp_path)
    assert second.choice.cached and second.runtime == first.runtime
    assert second.describe()["measured"] == first.describe()["measured"]


# ---------------------------------------------------------------------------------------
# Real engines on real photos
# ---------------------------------------------------------------------------------------

#: Quality floors per precision against ONNX Runtime fp32, on real photos (rounded images).
FLOORS = {"fp32": 60.0, "bf16": 45.0, "int8": 36.0}


@pytest.fixture(scope="module")
def real_photos(content_photos) -> list[np.ndarray]:
    arrays = []
    for path in content_photos[:2]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((256, 256))
        arrays.append(codec.to_array(image)[None])
    return arrays


@pytest.mark.parametrize("candidate", engines.candidates(ONNX_DIR / "udnie.onnx"), ids=lambda c: c.label)
def test_every_candidate_here_reaches_its_floor_on_real_photos(built_store, real_photos, candidate):
    model = ONNX_DIR / "udnie.onnx"
    reference = open_engine(model, engines.REFERENCE, threads=2)
    engine = open_engine(candidate.model_file(model), candidate, threads=2)
    for photo in real_photos:
        expected = reference.run({"image": photo})[0]
        output = engine.run({"image": photo})[0]
        assert output.shape == expected.shape
        assert psnr_db(expected, output) >= FLOORS[candidate.precision], candidate.label


def test_bf16_is_a_candidate_exactly_when_openvino_reports_it(built_store):
    labels = {c.label for c in engines.candidates(ONNX_DIR / "udnie.onnx")}
    assert ("openvino/bf16" in labels) == engines.openvino_cpu_has_bf16()
    assert "onnxruntime/fp32" in labels


#: Tiled against the same engine's whole-image output (tiles reorder the sums; int8 also
#: re-quantizes per tile's ranges of the shared statistics).
TILED_FLOORS = {"fp32": 55.0, "bf16": 45.0, "int8": 36.0}


@pytest.mark.parametrize("candidate", engines.candidates(ONNX_DIR / "udnie.onnx"), ids=lambda c: c.label)
def test_every_candidate_here_tiles_like_its_whole_image(built_store, real_photos, candidate):
    from core.tiling import Layout, TiledStylizer

    model = candidate.model_file(ONNX_DIR / "udnie.onnx")
    whole = open_engine(model, candidate, threads=2)
    tiled = TiledStylizer(model, Layout(tile=64, margin=16), threads=2, candidate=candidate)
    photo = real_photos[0][0][:, :150, :190]
    expected = whole.run({"image": photo[None]})[0][0]
    assert psnr_db(expected, tiled(np.ascontiguousarray(photo))) >= TILED_FLOORS[candidate.precision]
