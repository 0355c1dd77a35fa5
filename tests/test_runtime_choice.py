"""The engine choice: fastest candidate above the quality floor on every measuring photo,
bf16 retried with its norms in fp32, the opt-in fast tier, explicit settings honoured, bad
settings refused by name; and each real backend x precision on real photos.

The choice logic runs on fake engines and a fake clock (each engine advances the clock by
its own run time), so which candidate wins never depends on how busy this machine is.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from core import codec, cpu, engines, photos, runtime_choice
from core.engines import Candidate, open_engine
from core.runtime_choice import RuntimeSettings, SettingError, choose, psnr_db
from core.stylizer import Stylizer

from .conftest import ONNX_DIR

#: Three measuring "photos" (the batch the stylizer measures with).
PHOTOS = 3
REFERENCE_OUT = np.full((PHOTOS, 3, 8, 8), 100.0, np.float32)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Runs in ``seconds`` of fake time; its output is off the reference by ``error`` levels
    on one pixel of 64 of each photo, which sets its PSNR; ``error`` may be a list, one per
    measuring photo."""

    input_names = ("image",)

    def __init__(self, candidate: Candidate, seconds: float, error: float | list[float], clock: FakeClock):
        self.candidate, self.seconds, self.clock = candidate, seconds, clock
        self.errors = error if isinstance(error, list) else [error] * PHOTOS

    def run(self, feeds, shrink=False):
        self.clock.now += self.seconds
        count = len(feeds["image"])
        out = REFERENCE_OUT[:count].copy()
        out[:, 0, 0, 0] += self.errors[:count]
        return [out]


ORT32 = Candidate("onnxruntime", "fp32")
ORT8 = Candidate("onnxruntime", "int8")
OV32 = Candidate("openvino", "fp32")
OV16 = Candidate("openvino", "bf16")
OV8 = Candidate("openvino", "int8")
OV16_NORMS = Candidate("openvino", "bf16", fp32_norms=True)


def _pick(timings: dict[Candidate, tuple[float, float]], settings: RuntimeSettings, recorded=None):
    """Runs ``choose`` over fake engines: candidate -> (seconds per run, error in levels)."""
    clock = FakeClock()
    opened: list[Candidate] = []

    def open_candidate(candidate: Candidate):
        opened.append(candidate)
        # unless a test says otherwise, keeping the norms in fp32 changes nothing
        seconds, error = timings.get(candidate) or timings[replace(candidate, fp32_norms=False)]
        return FakeEngine(candidate, seconds, error, clock)

    found = [c for c in timings if not c.fp32_norms]  # the norms variant is derived, never listed
    choice = choose(found, settings, open_candidate, {"image": REFERENCE_OUT}, clock, recorded)
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


@pytest.mark.parametrize("bad_photo", [0, 1, 2])
def test_the_floor_holds_on_every_photo_not_just_one(bad_photo):
    """bf16 (and bf16 with fp32 norms) are fp32-like on two photos but far off on the third:
    the worst photo counts, so neither is chosen, and the record keeps each photo's figure."""
    errors = [FP32_ERR] * PHOTOS
    errors[bad_photo] = INT8_ERR
    machine = {**MACHINE, OV16: (0.17, errors), OV16_NORMS: (0.18, errors)}
    choice, _ = _pick(machine, RuntimeSettings())
    assert choice.candidate == OV32
    measured = {m.label: m for m in choice.measurements}["openvino/bf16"]
    assert measured.psnr_db == pytest.approx(_psnr_of(INT8_ERR), abs=0.01)
    assert measured.photos_psnr_db == pytest.approx([_psnr_of(e) for e in errors], abs=0.01)


def test_good_on_every_photo_is_chosen():
    choice, _ = _pick({**MACHINE, OV16: (0.17, [FP32_ERR, BF16_ERR, FP32_ERR])}, RuntimeSettings())
    assert choice.candidate == OV16


def test_bf16_below_the_floor_is_measured_again_with_norms_in_fp32():
    machine = {**MACHINE, OV16: (0.17, INT8_ERR), OV16_NORMS: (0.19, BF16_ERR)}
    choice, opened = _pick(machine, RuntimeSettings())
    assert choice.candidate == OV16_NORMS and choice.candidate.label == "openvino/bf16+fp32norms"
    assert opened.count(OV16_NORMS) == 1
    # when plain bf16 passes, the norms variant is never opened
    choice, opened = _pick({**MACHINE, OV16_NORMS: (0.10, 0)}, RuntimeSettings())
    assert choice.candidate == OV16 and OV16_NORMS not in opened
    # when neither passes, the next fastest above the floor serves
    choice, _ = _pick({**machine, OV16_NORMS: (0.19, INT8_ERR)}, RuntimeSettings())
    assert choice.candidate == OV32


def test_norms_variant_label_round_trips():
    assert Candidate.from_label("openvino/bf16+fp32norms") == OV16_NORMS
    assert Candidate.from_label(OV16.label) == OV16
    assert OV16.with_fp32_norms() == OV16_NORMS
    assert OV8.with_fp32_norms() is None and ORT32.with_fp32_norms() is None and OV16_NORMS.with_fp32_norms() is None


def _cpu_with(monkeypatch, *flags: str) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(("avx2", "fma", "avx512f", *flags)))


@pytest.mark.parametrize("int8_flag", ["avx512_vnni", "avx_vnni", "amx_int8"])
def test_fast_tier_is_honoured_where_the_cpu_has_int8(monkeypatch, int8_flag):
    """``precision fast``: OpenVINO int8 (or bf16), the fastest above the fast floor, even
    below the int8 floor; ONNX Runtime's int8 is not in the tier."""
    _cpu_with(monkeypatch, int8_flag)
    settings = RuntimeSettings.from_config({"precision": "fast"}, {})
    assert settings.precision == "fast" and settings.floor() == runtime_choice.PRECISION_FLOORS["fast"]
    choice, opened = _pick({**MACHINE, OV8: (0.12, 60.0)}, settings)  # ~34 dB: under int8's floor, over fast's
    assert choice.candidate == OV8
    assert set(opened) == {ORT32, OV16, OV8}
    choice, _ = _pick({**MACHINE, OV8: (0.12, 200.0)}, settings)  # int8 far off: bf16 is the fast tier here
    assert choice.candidate == OV16


@pytest.mark.parametrize("flags", [(), ("avx512_bf16",)])
def test_fast_tier_without_int8_instructions_is_refused_by_name(monkeypatch, flags):
    _cpu_with(monkeypatch, *flags)
    with pytest.raises(SettingError, match="precision fast asked for, but this CPU has no int8 dot-product"):
        runtime_choice.wanted(list(MACHINE), RuntimeSettings(precision="fast"))
    assert runtime_choice.wanted(list(MACHINE), RuntimeSettings()) == list(MACHINE)  # auto still works


def test_fast_tier_names_what_it_needs(monkeypatch):
    _cpu_with(monkeypatch, "avx512_vnni")
    with pytest.raises(SettingError, match="precision fast runs on OpenVINO"):
        runtime_choice.wanted(list(MACHINE), RuntimeSettings(backend="onnxruntime", precision="fast"))
    with pytest.raises(SettingError, match="precision fast needs OpenVINO"):
        runtime_choice.wanted([ORT32, ORT8], RuntimeSettings(precision="fast"))


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
        ({}, {"STYLE_PRECISION": "fp64"}, r"\$STYLE_PRECISION must be one of auto, fp32, bf16, int8, fp16, fast"),
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


# ---------------------------------------------------------------------------------------
# The measuring photos and the norms kept in fp32, for real
# ---------------------------------------------------------------------------------------


def _distinct(images: list[Image.Image]) -> bool:
    arrays = [np.asarray(image, np.float32) for image in images]
    return all(np.abs(a - b).mean() > 10 for i, a in enumerate(arrays) for b in arrays[i + 1 :])


def test_measuring_photos_are_three_different_pictures_of_one_size():
    images = photos.measuring_photos(runtime_choice.MEASURE_SIDE, runtime_choice.MEASURE_PHOTOS)
    assert len(images) == runtime_choice.MEASURE_PHOTOS >= 3
    assert {image.size for image in images} == {(runtime_choice.MEASURE_SIDE,) * 2}
    assert _distinct(images)


def test_measuring_photos_without_the_shared_folder(monkeypatch):
    """Grace Hopper, a shaded real terrain and a close-up: still three different pictures."""
    monkeypatch.setattr(photos, "content_photos", lambda: [])
    images = photos.measuring_photos(128, 3)
    assert len(images) == 3 and _distinct(images)
    assert all(np.asarray(image).std() > 20 for image in images)  # real content, not flat fills


@pytest.mark.skipif(not engines.openvino_cpu_has_bf16(), reason="this CPU (or install) has no OpenVINO bf16")
@pytest.mark.parametrize("name", ["multistyle.onnx", "udnie.onnx"])
def test_norms_in_fp32_run_in_fp32_and_the_rest_in_bf16(built_store, name):
    plain = open_engine(ONNX_DIR / name, OV16, threads=2)
    kept = open_engine(ONNX_DIR / name, OV16_NORMS, threads=2)
    assert "bf16" in engines.runtime_precisions(plain, "MVN")
    assert set(engines.runtime_precisions(kept, "MVN")) == {"f32"}
    assert "bf16" in engines.runtime_precisions(kept, "Convolution")


@pytest.mark.skipif(not engines.openvino_cpu_has_bf16(), reason="this CPU (or install) has no OpenVINO bf16")
def test_a_cached_choice_of_bf16_with_fp32_norms_is_reopened(built_store, tmp_path, monkeypatch):
    model = ONNX_DIR / "udnie.onnx"
    settings = RuntimeSettings()
    allowed = runtime_choice.wanted(engines.candidates(model), settings)
    key = runtime_choice.cache_key(model, allowed, settings)
    runtime_choice.write_cached(tmp_path, key, {"runtime": OV16_NORMS.label, "measured": []})
    monkeypatch.setattr(runtime_choice, "choose", lambda *a, **k: pytest.fail("measured again"))
    stylizer = Stylizer(model, settings, cache=tmp_path)
    assert stylizer.choice.cached and stylizer.runtime == "openvino/bf16+fp32norms"
    assert set(engines.runtime_precisions(stylizer.engine, "MVN")) == {"f32"}


@pytest.mark.skipif(not runtime_choice.cpu_has_int8(), reason="this CPU has no VNNI or AMX: precision fast is refused")
def test_fast_tier_serves_openvino_int8_or_bf16_above_its_floor_here(built_store, tmp_path):
    stylizer = Stylizer(ONNX_DIR / "udnie.onnx", RuntimeSettings.from_config({"precision": "fast"}, {}), cache=tmp_path)
    assert runtime_choice.fast_tier(stylizer.choice.candidate), stylizer.runtime
    chosen = {m.label: m for m in stylizer.choice.measurements}[stylizer.runtime]
    assert len(chosen.photos_psnr_db) == runtime_choice.MEASURE_PHOTOS
    assert chosen.psnr_db >= runtime_choice.PRECISION_FLOORS["fast"]
