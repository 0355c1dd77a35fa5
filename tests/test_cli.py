"""``python -m stylize``: batches with bad files, no silent overwrites, and the same finishing
options as the handler. Images are tiny copies of the real photos, written to tmp dirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from core import codec
from core.paths import ROOT
from networks import TransformerNet
from stylize.__main__ import main
from stylize.batch import output_names
from tests.support import clips

from .conftest import ONNX_DIR, SHARED, assert_no_metadata, jpeg_with_metadata

SIDE = 64


@pytest.fixture
def photos(content_photos, tmp_path) -> Path:
    """A folder of small PNG copies of the real photos (PNG: lossless, so exact checks hold)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for source in content_photos:
        image = Image.open(source).convert("RGB")
        image.thumbnail((SIDE, SIDE))
        image.save(folder / f"{source.stem}.png")
    return folder


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main([*map(str, args), "--no-progress"])
    return code, capsys.readouterr().out


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_bad_files_are_skipped_and_named_batch_goes_on(photos, tmp_path):
    good = sorted(p.stem for p in photos.iterdir())
    (photos / "corrupt.jpg").write_bytes(next(photos.iterdir()).read_bytes()[:300])
    (photos / "notes.txt").write_text("not an image\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "stylize", str(photos), "-o", str(out), "--style", "wave"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert sorted(p.stem for p in out.iterdir()) == good
    for stem in good:
        assert Image.open(out / f"{stem}.png").size == Image.open(photos / f"{stem}.png").size
    summary = result.stdout
    assert f"{len(good)} of {len(good) + 2} written" in summary
    skipped = summary.split("skipped", 1)[1]
    assert "corrupt.jpg" in skipped and "notes.txt" in skipped and "not an image" in skipped
    assert "body" not in skipped  # a file, not an HTTP request body


def test_missing_and_unreadable_inputs_are_named_and_the_batch_goes_on(photos, tmp_path, capsys):
    """One missing path or non-image among the inputs: named on stderr with its reason as it
    happens, the rest painted, a summary, exit 1."""
    good = sorted(photos.iterdir())
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    code = main([str(good[0]), str(missing), str(notes), *map(str, good[1:]), "-o", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1, captured
    assert sorted(p.stem for p in out.iterdir()) == sorted(p.stem for p in good)
    assert f"{missing}: missing file" in captured.err, captured.err
    assert f"{notes}: not an image" in captured.err, captured.err
    assert f"{len(good)} painted, 2 failed" in captured.out, captured.out
    assert str(missing) in captured.out.split("skipped", 1)[1]


@pytest.mark.parametrize("style", ["van_gogh", "multistyle:no_such_style"])
def test_unknown_style_names_the_other_ways_to_give_one(photos, tmp_path, capsys, style):
    assert main([str(photos), "-o", str(tmp_path / "out"), "--style", style]) == 2
    err = capsys.readouterr().err
    assert "--style-image PAINTING" in err, err
    if style == "van_gogh":
        assert "unknown style 'van_gogh'" in err and "multistyle:SPEC" in err and "multistyle:3:0.5,12:0.5" in err
    else:
        assert "no_such_style" in err and "--style NAME" in err


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_the_photos_metadata_never_reaches_the_painting(small_photo, tmp_path, capsys, fmt):
    photo = tmp_path / "in" / "phone.jpg"
    photo.parent.mkdir()
    photo.write_bytes(jpeg_with_metadata(small_photo))
    code, _ = _run(capsys, photo, "-o", tmp_path / "out", "--strength", "0.5", "--format", fmt)
    assert code == 0
    [output] = (tmp_path / "out").iterdir()
    assert_no_metadata(output.read_bytes())


def test_existing_output_is_kept_without_overwrite(photos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    first = sorted(photos.iterdir())[0]
    existing = out / f"{first.stem}.png"
    existing.write_bytes(b"keep me")
    code, summary = _run(capsys, photos, "-o", out)
    assert code == 0, summary
    assert existing.read_bytes() == b"keep me"
    assert "kept" in summary and str(existing) in summary and "--overwrite" in summary
    code, summary = _run(capsys, photos, "-o", out, "--overwrite")
    assert code == 0 and Image.open(existing).format == "PNG"


def test_reference_runtime_output_is_the_model_output(photos, tmp_path, capsys):
    """Forced to the reference engine, the CLI's pixels are ONNX Runtime fp32's, rounded."""
    code, summary = _run(capsys, photos, "-o", tmp_path / "out", "--style", "udnie",
                         "--backend", "onnxruntime", "--precision", "fp32")
    assert code == 0 and "onnxruntime/fp32" in summary
    session = ort.InferenceSession(str(ONNX_DIR / "udnie.onnx"), providers=["CPUExecutionProvider"])
    for source in photos.iterdir():
        photo = codec.decode(source.read_bytes())
        expected = session.run(None, {"image": codec.to_array(photo)[None]})[0][0].transpose(1, 2, 0)
        assert np.abs(_pixels(tmp_path / "out" / source.name) - expected).max() <= 1.0


def test_default_runtime_output_reaches_the_quality_floor(photos, tmp_path, capsys):
    """The automatic choice may be a faster engine; its output stays within 45 dB of fp32."""
    from core.runtime_choice import DEFAULT_MIN_PSNR_DB, psnr_db

    code, summary = _run(capsys, photos, "-o", tmp_path / "out", "--style", "udnie")
    assert code == 0 and " on " in summary
    session = ort.InferenceSession(str(ONNX_DIR / "udnie.onnx"), providers=["CPUExecutionProvider"])
    for source in photos.iterdir():
        photo = codec.decode(source.read_bytes())
        expected = session.run(None, {"image": codec.to_array(photo)[None]})[0][0].transpose(1, 2, 0)
        assert psnr_db(expected, _pixels(tmp_path / "out" / source.name)) >= DEFAULT_MIN_PSNR_DB


def test_strength_zero_returns_the_photo(photos, tmp_path, capsys):
    code, _ = _run(capsys, photos, "-o", tmp_path / "out", "--strength", "0")
    assert code == 0
    for source in photos.iterdir():
        assert np.array_equal(_pixels(tmp_path / "out" / source.name), _pixels(source))


def test_preserve_colors_keeps_the_photos_chroma(photos, tmp_path, capsys):
    code, _ = _run(capsys, photos, "-o", tmp_path / "out", "--preserve-colors", "--style", "wave")
    assert code == 0
    for source in photos.iterdir():
        painted = np.asarray(Image.open(tmp_path / "out" / source.name).convert("YCbCr"), dtype=np.float32)
        photo = np.asarray(Image.open(source).convert("YCbCr"), dtype=np.float32)
        assert np.abs(painted[..., 1:] - photo[..., 1:]).mean() < 2.0, "chroma changed"
        assert np.abs(painted[..., 0] - photo[..., 0]).mean() > 5.0, "luma not stylized"


@pytest.mark.parametrize("fmt, extension, pillow_name", [("jpeg", "jpg", "JPEG"), ("webp", "webp", "WEBP")])
def test_output_format(photos, tmp_path, capsys, fmt, extension, pillow_name):
    code, _ = _run(capsys, photos, "-o", tmp_path / "out", "--format", fmt)
    assert code == 0
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.suffix for p in outputs] == [f".{extension}"] * len(outputs)
    assert {Image.open(p).format for p in outputs} == {pillow_name}


def test_max_side_downscales(photos, tmp_path, capsys):
    code, _ = _run(capsys, photos, "-o", tmp_path / "out", "--max-side", "40")
    assert code == 0
    for output in (tmp_path / "out").iterdir():
        assert max(Image.open(output).size) == 40


def test_pth_state_dict_runs_in_pytorch(photos, tmp_path, capsys):
    # Explicitly random weights: this checks the .pth plumbing, not the painting.
    torch.manual_seed(0)
    weights = tmp_path / "random_transformer_net.pth"
    torch.save(TransformerNet().state_dict(), weights)
    code, summary = _run(capsys, photos, "-o", tmp_path / "out", "--model", weights)
    assert code == 0, summary
    assert "random_transformer_net.pth" in summary
    for source in photos.iterdir():
        assert Image.open(tmp_path / "out" / source.name).size == Image.open(source).size


def test_uint8_onnx_file_is_accepted(photos, tmp_path, capsys):
    code, _ = _run(capsys, photos, "-o", tmp_path / "a", "--model", ONNX_DIR / "udnie.uint8.onnx")
    assert code == 0
    code, _ = _run(capsys, photos, "-o", tmp_path / "b", "--model", ONNX_DIR / "udnie.onnx",
                   "--backend", "onnxruntime", "--precision", "fp32")
    for source in photos.iterdir():
        assert np.abs(_pixels(tmp_path / "a" / source.name) - _pixels(tmp_path / "b" / source.name)).max() <= 1.0


def test_unbuilt_style_says_how_to_build(photos, tmp_path, capsys):
    code = main([str(photos), "-o", str(tmp_path / "out"), "--style", "udnie", "--onnx-dir", str(tmp_path)])
    assert code == 2
    assert "scripts/build.sh" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_arguments_exit_2(photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main([str(photos), "-o", str(tmp_path), "--strength", "1.5"])
    assert raised.value.code == 2
    assert "strength" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2


def test_inputs_sharing_a_stem_get_distinct_names():
    names = output_names([Path("a.jpg"), Path("a.png"), Path("b.jpg")], "png")
    assert names == {Path("a.jpg"): "a_jpg.png", Path("a.png"): "a_png.png", Path("b.jpg"): "b.png"}


# -- videos (core.video; docs/video.md) -----------------------------------------------------


def _clip(tmp_path: Path, name: str = "clip.mov", **kwargs) -> clips.Clip:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    return clips.make_clip(folder / name, **{"frames": 4, **kwargs})


@pytest.mark.parametrize(
    "style", [("--style", "udnie"), ("--style", "multistyle:3"), ("--style-image", "udnie.jpg")],
    ids=["built", "multistyle", "style-image"],
)
def test_videos_are_painted_beside_images(photos, tmp_path, capsys, style):
    images = sorted(f"{p.stem}.png" for p in photos.iterdir())
    clip = _clip(tmp_path, rotation=90)  # in the photos' folder
    flag, value = style
    if flag == "--style-image":
        value = SHARED / "images" / "styles" / value
    out = tmp_path / "out"
    code, summary = _run(capsys, photos, "-o", out, flag, value)
    assert code == 0, summary
    assert sorted(p.name for p in out.iterdir()) == sorted([*images, "clip.mp4"])
    with av.open(str(out / "clip.mp4")) as container:
        frames = list(container.decode(video=0))
        assert [s.type for s in container.streams] == ["video", "audio"]
    assert len(frames) == clip.frames and (frames[0].width, frames[0].height) == (clip.width, clip.height)
    assert frames[0].rotation % 360 == 90


def test_video_format_and_stabilize_options(tmp_path, capsys):
    clip = _clip(tmp_path, name="clip.mp4", width=65, height=47)
    out = tmp_path / "out"
    code = main([str(clip.path), "-o", str(out), "--video-format", "webm", "--stabilize", "0", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.out
    with av.open(str(out / "clip.webm")) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert container.streams.audio[0].codec_context.name == "opus"
        assert len(list(container.decode(video=0))) == clip.frames
    assert "audio re-encoded to opus" in captured.err, captured.err
    with pytest.raises(SystemExit):
        main([str(clip.path), "-o", str(out), "--stabilize", "2"])


def test_bad_videos_are_skipped_and_named_with_nothing_left(tmp_path, capsys):
    good = _clip(tmp_path, name="good.mp4")
    clips.truncated(good, tmp_path / "in" / "cut.mp4")
    clips.audio_only(tmp_path / "in" / "tone.mp4")
    out = tmp_path / "out"
    code = main([str(tmp_path / "in"), "-o", str(out), "--no-progress"])
    summary, err = capsys.readouterr()
    assert code == 1, summary
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4"]  # no partial file of the bad ones
    assert "cut.mp4: not a usable video (video container is corrupt or truncated" in err, err
    assert "tone.mp4: not a usable video (no video stream" in err, err
    assert "1 painted, 2 failed" in summary
