"""Test-only synthetic clips: a textured pan with a tone, made with PyAV in a blink.

The video tests and the served-endpoint tests build their inputs here, so every clip is
small, deterministic and exactly known: its frame timestamps, its audio packets, its size
and rotation tag. ``Clip`` says what was written; the bad-input makers write the kinds of
file a video path must refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Suffix -> (video codec, audio codec) the clip maker uses for that container.
CODECS = {".mp4": ("libx264", "aac"), ".mov": ("libx264", "aac"), ".mkv": ("libx264", "libopus"),
          ".webm": ("libvpx-vp9", "libopus"), ".avi": ("mpeg4", None)}  # fmt: skip
#: Metadata the clip maker plants in the container: no output may carry it.
PLANTED = "planted-in-the-input-clip"
SAMPLE_RATE = 48000


@dataclass(frozen=True)
class Clip:
    """What was written: frame timestamps in seconds, the audio sample count, the size."""

    path: Path
    width: int
    height: int
    frames: int
    fps: Fraction
    times: tuple[float, ...]
    audio_samples: int
    rotation: int

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture ``[height, width, 3]`` uint8: structure at several scales, so
    optical flow locks onto it, and no flat areas where a pan would be invisible."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((16, 0.6), (6, 0.3), (2, 0.1)):
        small = rng.random(((height + cell - 1) // cell + 1, (width + cell - 1) // cell + 1, 3), dtype=np.float32)
        # Bilinear upsampling of a coarse random grid: smooth blobs of about ``cell`` pixels.
        ys = np.arange(height) / cell
        xs = np.arange(width) / cell
        y0, x0 = ys.astype(int), xs.astype(int)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        grid = (small[y0][:, x0] * (1 - fy) * (1 - fx) + small[y0 + 1][:, x0] * fy * (1 - fx)
                + small[y0][:, x0 + 1] * (1 - fy) * fx + small[y0 + 1][:, x0 + 1] * fy * fx)  # fmt: skip
        out += weight * grid
    return (out * 255).clip(0, 255).astype(np.uint8)


def pan_frames(width: int, height: int, frames: int, step: int = 2, cut_at: int | None = None,
               seed: int = 0, scene: np.ndarray | None = None) -> list[np.ndarray]:
    """``frames`` RGB arrays of a camera panning right by ``step`` pixels a frame over a
    textured scene (or over ``scene``, an RGB array at least ``height`` high and
    ``width + step * frames`` wide: a photo); from ``cut_at`` on, another scene (a hard cut)."""
    return list(_pan(width, height, frames, step, cut_at, seed, scene))


def _pan(width: int, height: int, frames: int, step: int, cut_at: int | None, seed: int,
         scene: np.ndarray | None) -> Iterator[np.ndarray]:  # fmt: skip
    """``pan_frames`` one at a time: a long clip is never held whole."""
    scenes = [texture(width + step * frames, height, seed) if scene is None else scene[:height]]
    if cut_at is not None:
        scenes.append(texture(width + step * frames, height, seed + 1))
    for i in range(frames):
        yield np.ascontiguousarray(scenes[cut_at is not None and i >= cut_at][:, step * i : step * i + width])


def make_clip(
    path: Path,
    width: int = 64,
    height: int = 48,
    frames: int = 12,
    fps: Fraction | int = 12,
    audio: bool = True,
    vfr: bool = False,
    rotation: int = 0,
    step: int = 2,
    cut_at: int | None = None,
    video_codec: str | None = None,
    pix_fmt: str | None = None,
    metadata: bool = True,
    scene: np.ndarray | None = None,
    preset: str = "ultrafast",
) -> Clip:
    """Writes a pan clip with a 440 Hz tone to ``path`` (container from its suffix).

    ``vfr``: frame durations alternate between one and two frame periods (timestamps in a
    1/1000 s time base); ``rotation``: a display-rotation tag, as phones write;
    ``metadata``: a title and comment carrying ``PLANTED``; ``scene``: pan over this picture
    (``pan_frames``); ``preset``: x264's. Deterministic bytes per arguments.
    """
    path = Path(path)
    fps = Fraction(fps)
    codec, audio_codec = CODECS[path.suffix.lower()]
    codec = video_codec or codec
    if pix_fmt is None:
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 or codec == "libvpx-vp9" else "yuv444p"
    time_base = Fraction(1, 1000) if vfr else 1 / fps
    ticks = [0]
    for i in range(1, frames):
        ticks.append(ticks[-1] + ((1 + i % 2) * round(1000 / fps) if vfr else 1))
    times = tuple(float(t * time_base) for t in ticks)
    duration = times[-1] + float((2 if vfr else 1) * (1 / fps))
    with av.open(str(path), "w") as out:
        if metadata:
            out.metadata["title"] = PLANTED
            out.metadata["comment"] = PLANTED
            out.metadata["location"] = "+48.8584+002.2945/"
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.thread_count = 1
        if codec == "libx264":
            stream.options = {"preset": preset, "crf": "18"}
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        sound = None
        if audio and audio_codec:
            sound = out.add_stream(audio_codec, rate=SAMPLE_RATE)
            sound.layout = "mono"
        for image, tick in zip(_pan(width, height, frames, step, cut_at, 0, scene), ticks, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = tick, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        samples = 0
        if sound is not None:
            total = int(duration * SAMPLE_RATE)
            t = np.arange(total) / SAMPLE_RATE
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            chunk = 960 if sound.codec_context.name in ("libopus", "opus") else 1024
            for start in range(0, total, chunk):
                piece = tone[start : start + chunk]
                frame = av.AudioFrame.from_ndarray(piece[None], format="flt", layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                frame.time_base = Fraction(1, SAMPLE_RATE)
                out.mux(sound.encode(frame))
                samples += piece.size
            out.mux(sound.encode(None))
    return Clip(path, width, height, frames, fps, times, samples, rotation)


# -- inputs a video path must refuse ------------------------------------------------------


def truncated(clip: Clip, target: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` of the clip's bytes, as a download cut short leaves it."""
    data = clip.data
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def corrupt(clip: Clip, target: Path, seed: int = 0) -> Path:
    """The clip with its media data overwritten by random bytes (the header intact)."""
    data = bytearray(clip.data)
    rng = np.random.default_rng(seed)
    start = len(data) // 4
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    return target


def _tone(out: av.container.OutputContainer, audio_codec: str, seconds: float) -> None:
    sound = out.add_stream(audio_codec, rate=SAMPLE_RATE)
    sound.layout = "mono"
    total = int(seconds * SAMPLE_RATE)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / SAMPLE_RATE)).astype(np.float32)
    chunk = 960 if sound.codec_context.name in ("libopus", "opus") else 1024
    for start in range(0, total, chunk):
        frame = av.AudioFrame.from_ndarray(tone[None, start : start + chunk], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
        out.mux(sound.encode(frame))
    out.mux(sound.encode(None))


def audio_only(target: Path, seconds: float = 0.5) -> Path:
    """A container with a tone and no video stream."""
    with av.open(str(target), "w") as out:
        _tone(out, CODECS[target.suffix.lower()][1] or "aac", seconds)
    return target


def zero_frames(target: Path, width: int = 64, height: int = 48) -> Path:
    """A Matroska/WebM file (``target``'s suffix) declaring a video stream that holds no frame,
    beside a short tone (an MP4 would drop an empty track; a file of no packets at all is
    no container FFmpeg opens)."""
    codec, audio_codec = CODECS[target.suffix.lower()]
    with av.open(str(target), "w") as out:
        stream = out.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        _tone(out, audio_codec or "aac", 0.2)
        out.mux(stream.encode(None))
    return target
