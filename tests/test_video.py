"""The video path (core.video, core.stabilize): frames, timing, size, rotation and sound kept;
flicker lowered; every bad input refused by name with nothing left behind.

Clips are tiny synthetic pans made here (tests.support.clips); the stabilization check paints
with the real udnie network through ONNX Runtime."""

from __future__ import annotations

import io
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageFilter, ImageOps

from core import video
from core.errors import InputError
from core.stabilize import Stabilizer, warping_error
from core.video import VideoLimits, VideoOptions, VideoProgress, paint_video, probe, sniff
from tests.support import clips

from .conftest import ONNX_DIR


def identity(frames: list[Image.Image]) -> list[Image.Image]:
    return frames


def inverted(frames: list[Image.Image]) -> list[Image.Image]:
    return [Image.fromarray(255 - np.asarray(frame)) for frame in frames]


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# -- recognising ---------------------------------------------------------------------------


def test_sniff_names_containers_from_their_first_bytes(tmp_path):
    for suffix, kind in ((".mp4", "mp4"), (".mov", "mov"), (".webm", "webm"), (".mkv", "mkv"), (".avi", "avi")):
        clip = clips.make_clip(tmp_path / f"c{suffix}", frames=2, audio=False)
        assert sniff(clip.data[:64]) == kind
    assert sniff(b"\x89PNG\r\n\x1a\n" + bytes(40)) is None
    assert sniff(b"") is None


@pytest.mark.parametrize("kwargs", [{}, {"width": 65, "height": 47}, {"vfr": True}, {"rotation": 90}],
                         ids=["even", "odd", "vfr", "rotated"])
def test_probe_describes_the_clip(tmp_path, kwargs):
    clip = clips.make_clip(tmp_path / "c.mp4", **kwargs)
    info = probe(clip.path)
    assert (info.container, info.codec, info.width, info.height) == ("mp4", "h264", clip.width, clip.height)
    assert info.frames == clip.frames and info.has_audio and info.rotation == clip.rotation
    assert info.pixels == clip.frames * clip.width * clip.height
    if not kwargs.get("vfr"):
        assert info.fps == clip.fps


# -- what is kept --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "output", "kwargs"),
    [(".mp4", "mp4", {}), (".mp4", "mp4", {"width": 65, "height": 47}), (".mp4", "mp4", {"vfr": True}),
     (".mp4", "mp4", {"rotation": 90}), (".mov", "mov", {"rotation": 270}),
     (".webm", "webm", {"width": 65, "height": 47, "rotation": 90}), (".mkv", "mp4", {"vfr": True})],
    ids=["mp4", "mp4-odd", "mp4-vfr", "mp4-rotated", "mov-rotated", "webm-odd", "mkv-vfr-to-mp4"],
)  # fmt: skip
def test_frames_timing_size_rotation_and_sound_are_kept(tmp_path, suffix, output, kwargs):
    clip = clips.make_clip(tmp_path / f"in{suffix}", **kwargs)
    target = tmp_path / f"out.{output}"
    result = paint_video(clip.path, target, inverted, VideoOptions(output=output))
    frames = decoded(target)
    assert len(frames) == result.frames == clip.frames
    # Matroska stores milliseconds: timestamps survive to the millisecond there, exactly elsewhere.
    tolerance = 1e-3 if suffix in (".webm", ".mkv") or output == "webm" else 1e-9
    assert np.allclose([float(f.time) for f in frames], clip.times, atol=tolerance, rtol=0)
    assert {(f.width, f.height) for f in frames} == {(clip.width, clip.height)}
    assert (result.width, result.height) == (clip.width, clip.height)
    odd = clip.width % 2 or clip.height % 2
    assert result.pixel_format == ("yuv444p" if odd and output != "webm" else "yuv420p")
    assert frames[0].format.name == result.pixel_format
    assert frames[0].rotation % 360 == clip.rotation
    assert result.audio == "copied" and result.summary()["audio"] == "copied"
    assert result.summary()["frames"] == str(clip.frames)
    assert audio_packets(target) == audio_packets(clip.path)
    if suffix != ".mkv":  # Opus from Matroska into MP4 loses its trimming marks (docs/video.md)
        assert audio_samples(target) == audio_samples(clip.path)
    assert clips.PLANTED.encode() not in target.read_bytes()
    assert leftovers(tmp_path) == []


def test_the_painting_survives_the_codec(tmp_path):
    """The encoder is not where the quality goes: the painted frames come back within a level or two."""
    clip = clips.make_clip(tmp_path / "in.mp4", width=128, height=96, frames=6, audio=False)
    target = tmp_path / "out.mp4"
    paint_video(clip.path, target, inverted, VideoOptions(stabilize=0))
    source = np.stack([f.to_ndarray(format="rgb24") for f in decoded(clip.path)]).astype(np.float32)
    painted = np.stack([f.to_ndarray(format="rgb24") for f in decoded(target)]).astype(np.float32)
    assert np.abs((255 - source) - painted).mean() < 2.5


def test_webm_output_reencodes_aac_and_says_why(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=6)
    result = paint_video(clip.path, tmp_path / "out.webm", identity, VideoOptions(output="webm"))
    assert result.codec == "vp9" and result.audio.startswith("re-encoded to opus:") and "aac" in result.audio
    with av.open(str(tmp_path / "out.webm")) as container:
        assert container.format.name.startswith("matroska")
        assert container.streams.audio[0].codec_context.name == "opus"


def test_same_clip_and_painter_give_the_same_bytes(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=8)
    for output in ("mp4", "webm"):
        first, second = tmp_path / f"a.{output}", tmp_path / f"b.{output}"
        paint_video(clip.path, first, inverted, VideoOptions(output=output, stabilize=0.6))
        paint_video(clip.path, second, inverted, VideoOptions(output=output, stabilize=0.6, batch=3, in_flight=2))
        assert first.read_bytes() == second.read_bytes(), output


def test_h264_settings_encode_the_same_frames_to_the_same_bytes_every_time():
    """With its macroblock tree, the x264 in PyAV's wheel read memory earlier encodes in the
    process left behind: on these frames most of a dozen repeats differed (docs/video.md)."""
    frames = [np.asarray(ImageOps.posterize(Image.fromarray(a).filter(ImageFilter.EDGE_ENHANCE_MORE), 3))
              for a in clips.pan_frames(160, 120, 12)]

    def encoded() -> bytes:
        out = io.BytesIO()
        with av.open(out, "w", format="mp4") as writer:
            stream = writer.add_stream("libx264", rate=12)
            stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
            stream.thread_count = video.ENCODER_THREADS
            stream.options = {"crf": "14", "preset": VideoOptions().preset, "x264-params": video.X264_PARAMS}
            for i, pixels in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = i
                writer.mux(stream.encode(frame))
            writer.mux(stream.encode(None))
        return out.getvalue()

    assert len({encoded() for _ in range(12)}) == 1


def test_progress_counts_frames_to_the_end(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=10, audio=False)
    seen: list[VideoProgress] = []
    paint_video(clip.path, tmp_path / "out.mp4", identity, VideoOptions(batch=4), on_progress=seen.append)
    assert [p.frames_done for p in seen] == [4, 8, 10, 10]
    assert all(p.frames_total == 10 for p in seen) and seen[-1].eta_s == 0.0


def test_frames_in_flight_are_bounded(tmp_path, monkeypatch):
    """The decoder runs at most a queue's worth ahead of the painter: never the whole clip."""
    import core.video

    clip = clips.make_clip(tmp_path / "in.mp4", frames=16, audio=False)
    options = VideoOptions(batch=2, in_flight=3)
    made: list[int] = []
    original = core.video._Frame

    def counting(*args):
        made.append(1)
        return original(*args)

    monkeypatch.setattr(core.video, "_Frame", counting)
    seen: list[int] = []

    def slow(frames):
        if not seen:
            time.sleep(0.5)  # the decoder gets every chance to run ahead
        seen.append(len(made))
        return frames

    paint_video(clip.path, tmp_path / "out.mp4", slow, options)
    # At the first call: the batch in hand, a full queue, and one frame waiting to be queued.
    assert seen[0] <= options.batch + options.in_flight + 1


def test_a_failing_painter_leaves_nothing(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=8)

    def broken(frames):
        raise RuntimeError("engine fell over")

    with pytest.raises(RuntimeError, match="fell over"):
        paint_video(clip.path, tmp_path / "out.mp4", broken)
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


# -- bad input -----------------------------------------------------------------------------


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, int, str, VideoLimits | None]]:
    clip = clips.make_clip(folder / "good.mp4", frames=12)
    webm = clips.make_clip(folder / "good.webm", frames=12)
    # An index up front (as phones and our own outputs write it) survives the cut: the frames stop early.
    indexed = folder / "indexed.mp4"
    paint_video(clip.path, indexed, identity, VideoOptions(stabilize=0))
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (folder / "empty.mp4").write_bytes(b"")
    return {
        "truncated": (clips.truncated(clip, folder / "cut.mp4"), 400, "corrupt or truncated", None),
        "truncated-indexed": (clips.truncated(replace(clip, path=indexed), folder / "cut2.mp4", keep=0.6), 400,
                              "corrupt or truncated", None),
        "truncated-tail": (clips.truncated(replace(clip, path=indexed), folder / "cut3.mp4", keep=0.97), 400,
                           "corrupt or truncated", None),
        "truncated-webm": (clips.truncated(webm, folder / "cut.webm", keep=0.6), 400, "corrupt or truncated", None),
        "corrupt": (clips.corrupt(webm, folder / "noise.webm"), 400, "corrupt", None),
        "audio-only": (clips.audio_only(folder / "tone.mp4"), 415, "no video stream", None),
        "zero-frames": (clips.zero_frames(folder / "nothing.mkv"), 400, "no frames", None),
        "unsupported-codec": (clips.make_clip(folder / "ffv1.mkv", frames=2, video_codec="ffv1", audio=False).path,
                              415, "unsupported video codec 'ffv1'", None),
        "not-a-video": (folder / "photo.png", 415, "not a video", None),
        "empty": (folder / "empty.mp4", 415, "empty", None),
        "frame-too-large": (clip.path, 413, "too large", VideoLimits(max_frame_pixels=64 * 47)),
        "too-many-frames": (clip.path, 413, "too many frames", VideoLimits(max_frames=11)),
        "too-long": (clip.path, 413, "too long", VideoLimits(max_duration_s=0.5)),
    }  # fmt: skip


BAD = ["truncated", "truncated-indexed", "truncated-tail", "truncated-webm", "corrupt", "audio-only", "zero-frames",
       "unsupported-codec", "not-a-video", "empty", "frame-too-large", "too-many-frames", "too-long"]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_by_name_and_leaves_nothing(tmp_path, case):
    source, status, words, limits = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=words) as raised:
        paint_video(source, out / "painted.mp4", identity, limits=limits)
    assert raised.value.status == status
    assert list(out.iterdir()) == []


def test_bad_options_are_refused(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=2, audio=False)
    with pytest.raises(InputError, match="stabilize"):
        paint_video(clip.path, tmp_path / "o.mp4", identity, VideoOptions(stabilize=1.5))
    with pytest.raises(InputError, match="unknown video output"):
        paint_video(clip.path, tmp_path / "o.mp4", identity, VideoOptions(output="gif"))


# -- temporal stability --------------------------------------------------------------------


def test_stabilize_zero_passes_paintings_through():
    frames = clips.pan_frames(32, 24, 3)
    stabilizer = Stabilizer(0.0)
    for frame in frames:
        painting = 255 - frame
        assert stabilizer(frame, painting) is painting


def test_a_scene_cut_starts_afresh():
    frames = clips.pan_frames(96, 64, 6, cut_at=3)
    rng = np.random.default_rng(0)
    # Paintings that flicker: each frame's strokes jitter on their own.
    paintings = [np.clip(255 - f.astype(int) + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8)
                 for f in frames]  # fmt: skip
    stabilizer = Stabilizer(1.0)
    outputs = [stabilizer(frame, painting) for frame, painting in zip(frames, paintings, strict=True)]
    assert stabilizer.cuts == 1
    assert np.array_equal(outputs[3], paintings[3])  # nothing of the old scene carried over
    assert not np.array_equal(outputs[4], paintings[4])  # and steadied again after it


@pytest.fixture(scope="module")
def udnie():
    """udnie through ONNX Runtime fp32, one thread: the painter the stabilization check uses."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(ONNX_DIR / "udnie.onnx"), options, providers=["CPUExecutionProvider"])

    def paint(frames: list[Image.Image]) -> list[Image.Image]:
        batch = np.stack([np.asarray(f, np.float32).transpose(2, 0, 1) for f in frames])
        out = session.run(None, {"image": batch})[0]
        return [Image.fromarray(np.clip(np.rint(a.transpose(1, 2, 0)), 0, 255).astype(np.uint8)) for a in out]

    return paint


def test_stabilization_lowers_the_warping_error(tmp_path, udnie):
    clip = clips.make_clip(tmp_path / "pan.mp4", width=128, height=96, frames=10, audio=False)
    contents = [f.to_ndarray(format="rgb24") for f in decoded(clip.path)]
    outputs = {}
    for strength in (0.0, VideoOptions().stabilize):
        target = tmp_path / f"s{strength}.mp4"
        paint_video(clip.path, target, udnie, VideoOptions(stabilize=strength))
        outputs[strength] = [f.to_ndarray(format="rgb24") for f in decoded(target)]
    alone, steady = outputs.values()
    assert warping_error(contents, steady) <= 0.5 * warping_error(contents, alone)
    difference = np.abs(np.stack(steady).astype(np.float32) - np.stack(alone)).mean()
    assert difference <= 10.0


def test_fps_of_vfr_clip_is_its_average(tmp_path):
    clip = clips.make_clip(tmp_path / "vfr.mp4", vfr=True, frames=12)
    result = paint_video(clip.path, tmp_path / "o.mp4", identity)
    assert isinstance(result.fps, Fraction) and 7 < float(result.fps) < 9
