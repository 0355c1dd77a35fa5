"""The one video path: a clip in, the same clip painted out, every frame, its timing and its sound.

``probe`` checks a file before any work (container, codec, size, frame count) and says what it
is; ``paint_video`` decodes it with PyAV, paints the frames in batches through any painter
(``Stylizer.paint`` and its kin), steadies them (``core.stabilize``), encodes them and copies
the audio across, as a pipeline holding a bounded number of frames:

    decoder thread --(in_flight frames)--> painter (this thread) --(in_flight pairs)--> stabilizer + encoder thread

The stabilizer runs in the encoder's thread, so its optical flow overlaps the next batch's
painting instead of adding to it.

What is kept: every frame with its own timestamp (variable frame rates included), the frame
rate, the exact size, the rotation tag, the audio (packets copied untouched where the output
container takes its codec, else re-encoded, and ``VideoResult.audio`` says why). What is not:
any other metadata (titles, comments, GPS locations) of the input.

The output is written to a temporary file beside the target and renamed over it at the end,
so a target exists whole or not at all. Encoding is deterministic (fixed encoder threads and
settings): one clip and one painter give the same bytes from the CLI and the servers.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from core.errors import InputError
from core.stabilize import Stabilizer

logger = logging.getLogger(__name__)

#: Output kinds -> media type.
VIDEO_FORMATS: dict[str, str] = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime"}
#: Containers read (by ``sniff``'s names).
READABLE = ("mp4", "mov", "webm", "mkv", "avi")
#: Video codecs decoded: the ones cameras, phones and the web write. FFmpeg decodes far more,
#: but each decoder is attack surface, and a niche codec is more likely a mistake than a clip.
DECODERS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mjpeg", "prores", "theora")
#: Audio codecs each output container takes as they are (stream copy); others are re-encoded.
AUDIO_COPY = {
    "mp4": ("aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"),
    "mov": ("aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"),
    "webm": ("opus", "vorbis"),
}
#: The audio encoder used when the input's audio cannot be copied, per output container.
AUDIO_ENCODER = {"mp4": ("aac", "aac"), "mov": ("aac", "aac"), "webm": ("libopus", "opus")}
#: Encoder threads, fixed: x264 and libvpx output depends on the thread count, and the same
#: clip must give the same bytes on every machine and entry point.
ENCODER_THREADS = 2
#: No macroblock tree: the x264 in PyAV's wheel, with it, reads memory it never wrote, so what
#: earlier work in the process left there changed its choices and the same frames could
#: encode to different bytes. The CLI and the server must write the same clip; at the
#: quality level used the tree only moves bits between frames.
X264_PARAMS = "mbtree=0"
_MUXER_OPTIONS = {"mp4": {"fflags": "+bitexact", "movflags": "+faststart"},
                  "mov": {"fflags": "+bitexact", "movflags": "+faststart"}, "webm": {"fflags": "+bitexact"}}


@dataclass(frozen=True)
class VideoLimits:
    """Size guards, checked from the container's headers before any frame is painted, and
    again while decoding (a header may lie)."""

    max_frame_pixels: int = 3840 * 2160  # 4K UHD
    max_frames: int = 30 * 60 * 10  # ten minutes at 30 fps
    max_duration_s: float = 600.0


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    frames: int  # from the container's index, else estimated from duration x rate
    fps: Fraction
    duration_s: float
    has_audio: bool
    rotation: int  # degrees counter-clockwise the player turns the stored frames

    @property
    def pixels(self) -> int:
        return self.frames * self.width * self.height


@dataclass(frozen=True)
class VideoOptions:
    """``output``: a ``VIDEO_FORMATS`` kind; ``stabilize``: 0 off .. 1 strongest (``core.stabilize``);
    ``batch``: frames per network call; ``in_flight``: frames each pipeline queue holds at most;
    ``crf``: the encoder's constant-quality level (x264: lower is better; VP9: its own scale)."""

    output: str = "mp4"
    stabilize: float = 0.6
    batch: int = 4
    in_flight: int = 8
    crf: int | None = None  # None: 14 for H.264, 24 for VP9, both well below visible codec loss
    preset: str = "veryfast"  # x264: slower presets make smaller files at the same quality, not better ones


@dataclass(frozen=True)
class VideoProgress:
    frames_done: int
    frames_total: int
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True)
class VideoResult:
    frames: int
    fps: Fraction
    width: int
    height: int
    audio: str  # "copied" | "re-encoded to <codec>: <why>" | "none"
    stabilize: float
    pixel_format: str
    codec: str = "h264"
    scene_cuts: int = 0

    def summary(self) -> dict[str, str]:
        """Plain strings for response headers and KServe parameters."""
        return {
            "frames": str(self.frames), "fps": str(self.fps), "width": str(self.width), "height": str(self.height),
            "audio": self.audio, "stabilize": f"{self.stabilize:g}", "pixel_format": self.pixel_format,
            "codec": self.codec, "scene_cuts": str(self.scene_cuts),
        }  # fmt: skip


Painter = Callable[[list[Image.Image]], list[Image.Image]]


# -- recognising and probing -------------------------------------------------------------


def sniff(head: bytes) -> str | None:
    """The container kind from a file's first bytes (16 or more), or None when they start no
    video container this module knows. No guess from a file name: names lie."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:64] else "mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    return None


def _open(source: Path) -> av.container.InputContainer:
    try:
        return av.open(str(source), metadata_errors="ignore")
    except av.FFmpegError as error:
        raise InputError(f"video container is corrupt or truncated ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def probe(source: Path, limits: VideoLimits | None = None) -> VideoInfo:
    """What ``source`` holds, or ``InputError`` naming why it cannot be painted: 415 not a
    video (or an unsupported codec), 413 too large, 400 corrupt, truncated or empty."""
    limits = limits or VideoLimits()
    source = Path(source)
    with source.open("rb") as file:
        head = file.read(64)
    if not head:
        raise InputError("empty file: send a video (MP4, MOV, WebM, MKV or AVI)", 415)
    kind = sniff(head)
    if kind is None:
        raise InputError(f"not a video container ({len(head)}+ bytes in none of: {', '.join(READABLE)})", 415)
    with _open(source) as container:
        if not container.streams.video:
            what = "audio only" if container.streams.audio else "no streams"
            raise InputError(f"no video stream in this {kind} file ({what})", 415)
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in DECODERS:
            raise InputError(f"unsupported video codec {codec!r}: send one of {', '.join(DECODERS)}", 415)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_frame_pixels:
            raise InputError(f"video frames too large: {width}x{height} is over {limits.max_frame_pixels} pixels", 413)
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(0)
        duration = _duration(container, stream)
        if duration > limits.max_duration_s:
            raise InputError(f"video too long: {duration:.1f} s is over {limits.max_duration_s:g} s", 413)
        frames = stream.frames or round(duration * fps)
        if frames > limits.max_frames:
            raise InputError(f"too many frames: {frames} is over {limits.max_frames}", 413)
        first = _first_frame(container, stream)
        if width <= 0 or height <= 0:
            width, height = first.width, first.height
        return VideoInfo(kind, codec, width, height, max(frames, 1), Fraction(fps), duration,
                         bool(container.streams.audio), _rotation(first))  # fmt: skip


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as error:
        raise InputError(f"video data is corrupt ({_reason(error)})") from None
    raise InputError("the video stream holds no frames")


def _rotation(frame: av.VideoFrame) -> int:
    return int(round(frame.rotation)) % 360 if frame.rotation else 0


# -- painting ------------------------------------------------------------------------------


@dataclass
class _Frame:
    pixels: np.ndarray  # RGB uint8 [H, W, 3]: the decoded frame, then its painting
    pts: int | None
    content: np.ndarray | None = None  # a painting's decoded frame, which the flow is computed on


_DONE = object()


class _Pipe:
    """A bounded queue between two pipeline stages that either side can abandon: a stage that
    fails sets ``failed`` so the others stop waiting on it instead of blocking forever."""

    def __init__(self, size: int, failed: threading.Event):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._failed = failed

    def put(self, item: object) -> None:
        while not self._failed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> object:
        while not self._failed.is_set():
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE


class _Stage(threading.Thread):
    """A pipeline thread whose exception is kept for the caller to re-raise."""

    def __init__(self, name: str, work: Callable[[], None], failed: threading.Event):
        super().__init__(name=name, daemon=True)
        self._work, self._failed = work, failed
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # noqa: BLE001 - handed to the caller, which re-raises it
            self.error = error
            self._failed.set()


def paint_video(
    source: Path,
    target: Path,
    paint: Painter,
    options: VideoOptions = VideoOptions(),
    on_progress: Callable[[VideoProgress], None] | None = None,
    limits: VideoLimits | None = None,
) -> VideoResult:
    """Paints every frame of ``source`` into ``target`` (``options.output`` container).

    ``InputError`` for a clip that cannot be painted (nothing is left behind); any other
    exception is ours or the painter's, and leaves nothing behind either.
    """
    if options.output not in VIDEO_FORMATS:
        raise InputError(f"unknown video output {options.output!r}: one of {', '.join(VIDEO_FORMATS)}")
    if not 0.0 <= options.stabilize <= 1.0:
        raise InputError(f"stabilize must be within 0..1, got {options.stabilize}")
    limits = limits or VideoLimits()
    info = probe(source, limits)
    target = Path(target)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        result = _paint(Path(source), temporary, info, paint, options, on_progress, limits)
        os.replace(temporary, target)
        return result
    finally:
        temporary.unlink(missing_ok=True)


def _paint(source: Path, temporary: Path, info: VideoInfo, paint: Painter, options: VideoOptions,
           on_progress: Callable[[VideoProgress], None] | None, limits: VideoLimits) -> VideoResult:  # fmt: skip
    failed = threading.Event()
    decoded, painted = _Pipe(options.in_flight, failed), _Pipe(options.in_flight, failed)
    with _open(source) as reader, av.open(
        # bitexact: no random file identifiers (Matroska's segment UID) and no muxer version tag,
        # so equal inputs give equal bytes; faststart: the index up front, so players start at once.
        str(temporary), "w", format=options.output, options=_MUXER_OPTIONS[options.output]
    ) as writer:
        video_in = reader.streams.video[0]
        video_in.thread_type = "AUTO"  # decoding threads change no pixel
        encoder = _VideoEncoder(writer, info, video_in, options)
        audio = _AudioCarrier(source, writer, options.output) if info.has_audio else None
        decode = _Stage("video-decode", lambda: _decode(reader, video_in, info, limits, decoded), failed)
        stabilizer = Stabilizer(options.stabilize)
        encode = _Stage("video-encode", lambda: _encode(encoder, stabilizer, audio, painted), failed)
        decode.start()
        encode.start()
        started, done = time.perf_counter(), 0
        try:
            for batch in _batches(decoded, options.batch):
                paintings = paint([Image.fromarray(frame.pixels) for frame in batch])
                for frame, painting in zip(batch, paintings, strict=True):
                    painted.put(_Frame(_pixels(painting, info), frame.pts, frame.pixels))
                done += len(batch)
                if on_progress is not None:
                    elapsed = time.perf_counter() - started
                    total = max(info.frames, done)
                    on_progress(VideoProgress(done, total, elapsed, elapsed / done * (total - done)))
        except BaseException:
            failed.set()
            raise
        finally:
            painted.put(_DONE)
            decode.join()
            encode.join()
            if audio is not None:
                audio.close()
        for stage in (decode, encode):
            if stage.error is not None:
                raise stage.error
        if done == 0:
            raise InputError("the video stream holds no frames")
        if on_progress is not None:
            on_progress(VideoProgress(done, done, time.perf_counter() - started, 0.0))
    return VideoResult(done, info.fps, info.width, info.height, audio.outcome if audio else "none",
                       options.stabilize, encoder.pixel_format, encoder.codec, stabilizer.cuts)  # fmt: skip


def _batches(decoded: _Pipe, size: int) -> Iterator[list[_Frame]]:
    batch: list[_Frame] = []
    while (item := decoded.get()) is not _DONE:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _pixels(painting: Image.Image, info: VideoInfo) -> np.ndarray:
    painting = painting.convert("RGB")
    if painting.size != (info.width, info.height):  # a network that rounds sizes to its stride
        painting = painting.resize((info.width, info.height), Image.Resampling.BICUBIC)
    return np.asarray(painting)


def _decode(reader: av.container.InputContainer, stream: av.video.stream.VideoStream, info: VideoInfo,
            limits: VideoLimits, decoded: _Pipe) -> None:  # fmt: skip
    count, end = 0, 0.0
    period = float(1 / info.fps) if info.fps > 0 else 0.0
    try:
        for packet in reader.demux(stream):
            if packet.is_corrupt:  # e.g. the last packet of a cut file, read short
                raise InputError(f"video data is corrupt or truncated at frame {count + 1}")
            for frame in packet.decode():
                count += 1
                if count > limits.max_frames:
                    raise InputError(f"too many frames: more than {limits.max_frames}", 413)
                # Every frame at the clip's size: a stream that changes size midway is scaled back.
                pixels = frame.to_ndarray(format="rgb24", width=info.width, height=info.height)
                decoded.put(_Frame(pixels, frame.pts))
                end = max(end, (frame.time or 0.0) + period)
    except av.FFmpegError as error:
        raise InputError(f"video data is corrupt or truncated at frame {count + 1} ({_reason(error)})") from None
    finally:
        decoded.put(_DONE)
    # Demuxers skip what they cannot parse rather than fail: a damaged or cut file shows up
    # as frames that stop well before the duration its headers declare.
    if count and (count < stream.frames or end < 0.9 * info.duration_s - 2 * period):
        raise InputError(f"video data is corrupt or truncated: {count} frames decoded, up to {end:.2f} s of "
                         f"the {info.duration_s:.2f} s the container declares")


class _VideoEncoder:
    """H.264 (MP4, MOV) or VP9 (WebM) at the input's size, time base and rotation."""

    def __init__(self, writer: av.container.OutputContainer, info: VideoInfo,
                 source: av.video.stream.VideoStream, options: VideoOptions):  # fmt: skip
        self.writer = writer
        webm = options.output == "webm"
        self.codec = "vp9" if webm else "h264"
        # H.264's 4:2:0 needs even sizes; rather than crop or pad a pixel, odd sizes keep every
        # pixel in 4:4:4 (High 4:4:4 profile). VP9 codes odd sizes in 4:2:0.
        even = info.width % 2 == 0 and info.height % 2 == 0
        self.pixel_format = "yuv420p" if webm or even else "yuv444p"
        rate = info.fps if info.fps > 0 else Fraction(25)
        stream = writer.add_stream("libvpx-vp9" if webm else "libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, self.pixel_format
        stream.thread_count = ENCODER_THREADS
        # The input's time base, so every frame keeps its timestamp exactly (VFR included).
        self.time_base = source.time_base or 1 / rate
        stream.codec_context.time_base = self.time_base
        if webm:
            crf = options.crf if options.crf is not None else 24
            stream.options = {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "0"}
        else:
            crf = options.crf if options.crf is not None else 14
            stream.options = {"crf": str(crf), "preset": options.preset, "x264-params": X264_PARAMS}
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self.stream = stream
        self._last_pts: int | None = None

    def encode(self, frame: _Frame) -> list[av.Packet]:
        pts = frame.pts
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            # A frame without a usable timestamp follows the previous one by one frame period.
            step = max(1, round(1 / (self.stream.codec_context.framerate * self.time_base)))
            pts = 0 if self._last_pts is None else self._last_pts + step
        self._last_pts = pts
        video = av.VideoFrame.from_ndarray(frame.pixels, format="rgb24")
        video.pts, video.time_base = pts, self.time_base
        return self.stream.encode(video)

    def flush(self) -> list[av.Packet]:
        return self.stream.encode(None)


def _encode(encoder: _VideoEncoder, stabilizer: Stabilizer, audio: _AudioCarrier | None, painted: _Pipe) -> None:
    while (item := painted.get()) is not _DONE:
        packets = encoder.encode(_Frame(stabilizer(item.content, item.pixels), item.pts))
        if audio is not None and packets:
            # Audio up to the newest video time, so the muxer interleaves without hoarding.
            audio.until(max(float(p.pts * p.time_base) for p in packets if p.pts is not None) + 0.5)
        encoder.writer.mux(packets)
    encoder.writer.mux(encoder.flush())
    if audio is not None:
        audio.until(None)


class _AudioCarrier:
    """The input's first audio stream into the output: packets copied as they are when the
    output container takes the codec, else decoded and re-encoded (and ``outcome`` says why)."""

    def __init__(self, source: Path, writer: av.container.OutputContainer, output: str):
        self._reader = _open(source)  # a second reader: audio advances at the video's pace
        self._stream = self._reader.streams.audio[0]
        self._writer = writer
        codec = self._stream.codec_context.name
        if codec in AUDIO_COPY[output]:
            self._out = writer.add_stream_from_template(self._stream)
            self._out.metadata.clear()  # a track title or handler name is the input's metadata too
            self._resampler = None
            self.outcome = "copied"
        else:
            encoder, name = AUDIO_ENCODER[output]
            rate = 48000 if name == "opus" else (self._stream.rate or 48000)
            self._out = writer.add_stream(encoder, rate=rate)
            layout = self._stream.layout.name if self._stream.layout and self._stream.channels <= 2 else "stereo"
            self._out.layout = layout
            self._out.thread_count = 1
            self._resampler = av.AudioResampler(format=self._out.format.name, layout=layout, rate=rate)
            self.outcome = f"re-encoded to {name}: {output.upper()} cannot carry {codec}"
        self._packets = self._reader.demux(self._stream)
        self._finished = False
        self._count = 0

    def until(self, seconds: float | None) -> None:
        """Muxes the audio up to ``seconds`` of the input's timeline (None: all of it)."""
        while not self._finished:
            try:
                packet = next(self._packets)
            except StopIteration:
                self._finished = True
                break
            except av.FFmpegError as error:
                raise InputError(f"audio data is corrupt or truncated ({_reason(error)})") from None
            if packet.is_corrupt:
                raise InputError("audio data is corrupt or truncated")
            if packet.size:
                self._count += 1
            if self._resampler is None:
                if packet.dts is not None:  # the demuxer's final empty packet carries none
                    packet.stream = self._out
                    self._writer.mux(packet)
            else:
                self._reencode(packet)
            if seconds is not None and packet.pts is not None and packet.time_base is not None \
                    and float(packet.pts * packet.time_base) > seconds:  # fmt: skip
                break
        if seconds is None and self._count < self._stream.frames:  # the index knows what a cut file lost
            raise InputError(f"audio data is corrupt or truncated: {self._count} of the {self._stream.frames} "
                             "packets the container declares")
        if seconds is None and self._resampler is not None:
            for frame in self._resampler.resample(None):
                self._writer.mux(self._out.encode(frame))
            self._writer.mux(self._out.encode(None))

    def _reencode(self, packet: av.Packet) -> None:
        try:
            frames = packet.decode()
        except av.FFmpegError as error:
            raise InputError(f"audio data is corrupt ({_reason(error)})") from None
        for frame in frames:
            for resampled in self._resampler.resample(frame):
                self._writer.mux(self._out.encode(resampled))

    def close(self) -> None:
        self._reader.close()
