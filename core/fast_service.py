"""The fast-style service: one request from a ``core.request.Request`` to its ``Reply``, for any server.

``FastStyleService`` serves one network of one of three families, each a small strategy
(``Family``) saying what differs between them:

- ``SingleStyle`` (``handlers/fast_style.py``): the style is baked into the network; the
  photo is all a request gives; large photos are tiled;
- ``Multistyle`` (``handlers/multistyle.py``, ``core.multistyle``): the request picks or
  blends the 26 styles (``style`` or ``style_weights``), given to the network as its
  ``style_weights`` input;
- ``Arbitrary`` (``handlers/arbitrary.py``, ``core.arbitrary``): the request sends style
  images; their style vectors (cached) are blended and given as the ``style_vector`` input.

Per request: ``prepare`` (parameters checked, the photo decoded, the style turned into the
network's inputs; raises ``InputError``), ``run`` (a batch of jobs in one call of the
stylizer, under the server-wide admission control of ``core.admission``; raises
``Overloaded``) and ``reply`` (the encoded painting and its summary: the engine and what the
family tells). The TorchServe handlers (``core.handler``) and the KServe predictor
(``predictor.models``) both drive these three.

A video body (a ``video/*`` Content-Type, or bytes ``core.video.sniff`` recognises) makes a
``VideoJob`` instead: ``prepare`` writes the upload to a private temp folder, probes it
(``core.video.probe``: a bad clip is a 4xx naming the problem) and refuses with 413 a clip
that could not finish inside the response timeout even on an idle server, naming the CLI
line that paints it offline. ``run_alone`` paints it (``core.video.paint_video``) with the
family's network and the request's finishing options frame by frame, inside an admission
slot charged frames x pixels, handing NDJSON progress lines to ``send`` when the client
asked for ``stream``; the temp folder goes whatever happens. ``reply`` is the clip (same
kind as the upload unless ``format``/Accept say otherwise) and its summary: frames, fps,
audio, stabilize, pixel format.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from core import arbitrary, codec, multistyle, style_options, video
from core.admission import Admission
from core.codec import Limits
from core.errors import InputError
from core.reply import NDJSON, Reply, ndjson_line, result_line
from core.request import MISSING_STYLE, Request, RequestForm
from core.runtime_choice import RuntimeSettings
from core.settings import handler_settings
from core.stylizer import Stylizer, TilingPolicy

logger = logging.getLogger(__name__)
#: Seconds between streamed progress lines of a video (the first and the last always go).
STREAM_INTERVAL_S = 1.0
#: Where a clip too long for one request gets painted: the CLI has no response timeout.
CLI_HINT = "python -m stylize clip.mp4 -o out/ --style {style}"


@dataclass
class Style:
    """How one request's style reaches the network."""

    feeds: dict[str, np.ndarray] | None = None  # graph inputs besides the photo
    summary: dict[str, Any] = field(default_factory=dict)  # what the reply tells about it
    finishing: dict[str, Any] = field(default_factory=dict)  # finishing options it replaces


class Family:
    """What differs between the fast networks: the requests they take (``form``), how the
    network opens, and how a request's style becomes the network's inputs. An instance is
    the family's network, opened."""

    #: The handler module's name; also the family of its ``handler:`` settings (``core.settings``).
    name: ClassVar[str]
    form: ClassVar[RequestForm]
    #: Whether large photos may be tiled: a network with a style input runs whole images.
    tiles: ClassVar[bool] = False
    stylizer: Stylizer

    def __init__(self, model_file: Path, runtime: RuntimeSettings, settings: Mapping[str, Any], gpu_id: int | None):
        """Opens the network (``settings``: the checked ``handler:`` section of its model config)."""
        raise NotImplementedError

    def style(self, photo: Image.Image, styles: list[bytes], params: dict[str, Any]) -> Style:
        return Style()


class SingleStyle(Family):
    """One style baked into the network: the photo is all a request gives; large photos are tiled."""

    name = "fast_style"
    #: The CLI's ``--style`` for a model of this family (``{model}``: the served model's name).
    cli_style: ClassVar[str] = "{model}"
    form = RequestForm("image", {**style_options.PARAMS, **style_options.VIDEO_PARAMS}, aliases=("file", "video"))
    tiles = True

    def __init__(self, model_file: Path, runtime: RuntimeSettings, settings: Mapping[str, Any], gpu_id: int | None):
        self.stylizer = Stylizer(model_file, runtime, TilingPolicy.from_config(settings), gpu_id=gpu_id)


class Multistyle(Family):
    """The 26 styles: ``style`` or ``style_weights`` picks or blends them (the network's ``style_weights``)."""

    name = "multistyle"
    cli_style = "multistyle:SPEC"
    form = RequestForm("image", {**multistyle.PARAMS, **style_options.VIDEO_PARAMS}, aliases=("file", "video"))

    def __init__(self, model_file: Path, runtime: RuntimeSettings, settings: Mapping[str, Any], gpu_id: int | None):
        self.stylizer = multistyle.open_stylizer(model_file, runtime, gpu_id)

    def style(self, photo: Image.Image, styles: list[bytes], params: dict[str, Any]) -> Style:
        weights = multistyle.style_from_params(params)
        return Style({multistyle.STYLE_INPUT: weights}, {"blend": multistyle.describe(weights)})


class Arbitrary(Family):
    """Any painting: the request's style images, their cached style vectors blended (``style_vector``)."""

    name = "arbitrary"
    cli_style = "--style-image painting.jpg"
    form = RequestForm("content", {**arbitrary.PARAMS, **style_options.VIDEO_PARAMS}, styles=True,
                       aliases=("video",))

    def __init__(self, model_file: Path, runtime: RuntimeSettings, settings: Mapping[str, Any], gpu_id: int | None):
        self.painter = arbitrary.ArbitraryStylizer.open(model_file.parent, runtime, gpu_id,
                                                        cache_size=settings["style_cache_size"],
                                                        max_style_input_pixels=settings["max_style_input_pixels"])
        self.stylizer = self.painter.transform

    def style(self, photo: Image.Image, styles: list[bytes], params: dict[str, Any]) -> Style:
        """The target vector (the predictor runs here, or the cache answers), so a bad style
        image is a 4xx before any painting; the summary counts the cache's answers."""
        hits = self.painter.cache.hits
        vector = self.painter.target_vector(photo, arbitrary.StyleRequest.of(styles, params))
        # The vector carries the strength: the finishing step only recolours.
        return Style({arbitrary.STYLE_INPUT: vector}, {"cache_hits": self.painter.cache.hits - hits},
                     {"strength": 1.0, "tile": False})


#: The families by name: the handler module that serves each (an archive's manifest names it).
FAMILIES: dict[str, type[Family]] = {family.name: family for family in (SingleStyle, Multistyle, Arbitrary)}


@dataclass
class FastJob:
    """One checked request, ready to paint."""

    #: Whether the job runs on its own (``FastStyleService.run_alone``) rather than in a batch.
    alone: ClassVar[bool] = False
    photo: Image.Image
    params: dict[str, Any]  # the finishing options (``core.style_options``) and the output's
    fmt: str
    feeds: dict[str, np.ndarray] | None
    summary: dict[str, Any]

    @property
    def pixels(self) -> int:
        return self.photo.width * self.photo.height

    @property
    def stream(self) -> bool:
        return self.params["stream"]


@dataclass
class VideoJob:
    """One checked video request: the upload in its own temp folder, probed, and how to paint it."""

    alone: ClassVar[bool] = True
    folder: tempfile.TemporaryDirectory
    source: Path
    info: video.VideoInfo
    params: dict[str, Any]  # the finishing options, as for a photo
    styles: list[bytes]
    options: video.VideoOptions
    summary: dict[str, Any]

    @property
    def pixels(self) -> int:
        return self.info.pixels

    @property
    def fmt(self) -> str:
        return self.options.output

    @property
    def stream(self) -> bool:
        return self.params["stream"]

    def discard(self) -> None:
        """Removes the upload and whatever was painted (done by ``run_alone``; safe twice)."""
        self.folder.cleanup()


@dataclass
class PaintedVideo:
    """A painted clip, read back before its temp folder went, and what painting it told."""

    data: bytes
    result: video.VideoResult
    style: dict[str, Any]


class FramePainter:
    """The family's network as ``core.video``'s painter: each batch of frames painted with
    the request's finishing options. The style comes from the first frame (a family that
    moves the style toward the photo's own takes it from there) and holds for the whole clip,
    so it cannot flicker."""

    def __init__(self, family: Family, styles: list[bytes], params: dict[str, Any]):
        self.family, self.styles, self.params = family, styles, params
        self.style: Style | None = None

    def __call__(self, frames: list[Image.Image]) -> list[Image.Image]:
        if self.style is None:
            self.style = self.family.style(frames[0], self.styles, self.params)
        options = {**self.params, **self.style.finishing}
        return self.family.stylizer.paint(frames, [options] * len(frames), [self.style.feeds] * len(frames))


class FastStyleService:
    """One opened network of a family, its upload limits (photos and clips) and its admission door."""

    def __init__(self, name: str, family: Family, limits: Limits, admission: Admission,
                 video_limits: video.VideoLimits):
        self.name = name
        self.family = family
        self.limits = limits
        self.admission = admission
        self.video_limits = video_limits

    @classmethod
    def open(cls, family: type[Family], name: str, model_file: Path, model_config: Mapping | None,
             gpu_id: int | None = None) -> FastStyleService:
        """Opens model ``name`` (its ``model_file`` and model config) on the engine this machine
        runs it best on; a bad setting stops the worker here with a message naming it."""
        settings = handler_settings(model_config, family.name)  # unknown keys stop the worker
        limits = Limits(max_input_pixels=settings["max_input_pixels"], max_pixels=settings["max_pixels"])
        # A frame is painted whole like a photo: the photo's pixel bound is the frame's.
        video_limits = video.VideoLimits(max_frame_pixels=settings["max_pixels"],
                                         max_frames=settings["max_video_frames"],
                                         max_duration_s=settings["max_video_seconds"])
        opened = family(Path(model_file), RuntimeSettings.from_config(settings), settings, gpu_id)
        # Server-wide bound on work in flight (core.admission); bad settings stop the worker here.
        admission = Admission.for_worker(name, model_config, opened.stylizer.settings.threads, limits.max_pixels,
                                         stylizer=opened.stylizer)
        logger.info("%s runs on %s", name, opened.stylizer.runtime)
        return cls(name, opened, limits, admission, video_limits)

    @property
    def form(self) -> RequestForm:
        return self.family.form

    @property
    def stylizer(self) -> Stylizer:
        return self.family.stylizer

    @property
    def runtime(self) -> str:
        """The engine's label, e.g. ``openvino/bf16``."""
        return self.stylizer.runtime

    def describe(self) -> dict[str, Any]:
        """The engine chosen and what was measured."""
        return {"style": self.name, **self.stylizer.describe()}

    def prepare(self, request: Request) -> FastJob | VideoJob:
        """Checks the parameters, decodes the photo and gives its style to the network (a
        video: see ``prepare_video``); ``InputError`` names the problem."""
        params = self.form.parse_params(request.params)
        if not self.family.tiles:
            multistyle.refuse_tiling(params, self.family.name)
        if is_video(request):
            return self.prepare_video(request, params)
        if params["stabilize"] is not None:
            raise InputError("parameter 'stabilize' applies to videos; this request sends an image")
        fmt = codec.parse_format(params["format"]) or codec.format_from_accept(request.accept) or "png"
        photo = self.form.photo_of(request, self.limits, params["max_side"])
        style = self.family.style(photo, request.styles, params)
        summary = {"runtime": self.runtime, **style.summary}
        return FastJob(photo, {**params, **style.finishing}, fmt, style.feeds, summary)

    def run(self, jobs: list[FastJob]) -> list[Image.Image]:
        """The paintings, in one stylizer call (same-size photos with the same style share a
        network call; large ones are tiled where the family allows), once admitted."""
        with self.admission.fast(sum(job.pixels for job in jobs)):
            return self.stylizer.paint([job.photo for job in jobs], [job.params for job in jobs],
                                       [job.feeds for job in jobs])

    def reply(self, job: FastJob | VideoJob, outcome: Image.Image | PaintedVideo) -> Reply:
        """The encoded painting or the painted clip with its summary; streamed, the NDJSON
        line that carries it."""
        if isinstance(outcome, PaintedVideo):
            data, media_type, key = outcome.data, video.VIDEO_FORMATS[job.fmt], "video"
            summary = {**job.summary, **outcome.style, **outcome.result.summary()}
        else:
            data = codec.encode(outcome, job.fmt, job.params["quality"], job.params["png_compression"])
            media_type, key, summary = codec.MEDIA_TYPES[job.fmt], "image", job.summary
        if job.stream:
            return Reply(200, NDJSON, result_line(summary, data, job.fmt, media_type, key), summary)
        return Reply(200, media_type, data, summary)

    # -- video -------------------------------------------------------------------------------

    def prepare_video(self, request: Request, params: dict[str, Any]) -> VideoJob:
        """The clip written to a temp folder of its own and probed; refused (the folder gone)
        when it is no clip this server paints, or when it could not finish in time even alone."""
        if request.params.get("max_side") is not None:
            raise InputError("parameter 'max_side' applies to images: a video is painted at its own size "
                             "(scale it first, e.g. ffmpeg -i clip.mp4 -vf scale=640:-2 small.mp4)")
        if self.form.styles and not request.styles:
            raise InputError(MISSING_STYLE)
        folder = tempfile.TemporaryDirectory(prefix="style-video-")
        try:
            source = Path(folder.name) / "upload"
            source.write_bytes(request.photo)
            info = video.probe(source, self.video_limits)
            fmt = video_format(params["format"], request.accept, info.container)
            self._check_time(info)
            options = video.VideoOptions(output=fmt, **({} if params["stabilize"] is None
                                                        else {"stabilize": params["stabilize"]}))
            return VideoJob(folder, source, info, params, list(request.styles), options, {"runtime": self.runtime})
        except BaseException:
            folder.cleanup()
            raise

    def _check_time(self, info: video.VideoInfo) -> None:
        """413 when the clip's painting would outlast what a request may take even on an idle
        server: waiting cannot help, the CLI can."""
        seconds = self.admission.seconds_alone(info.pixels, info.width * info.height)
        allowed = self.admission.heavy_budget_s
        if seconds > allowed:
            cli = CLI_HINT.format(style=self.family.cli_style.format(model=self.name))
            raise InputError(
                f"video too long for one request: {info.frames} frames of {info.width}x{info.height} take about "
                f"{seconds:.1f} s to paint on this server, over the {allowed:.1f} s a request may take here "
                f"(responseTimeout less admission's wait, margin and reserve); paint it with the CLI, which "
                f"has no time limit: {cli}", status=413)

    def run_alone(self, job: VideoJob, send: Callable[[str], None] | None = None) -> PaintedVideo:
        """Paints the clip once admitted (``Overloaded`` when the server has no room), its
        progress streamed to ``send`` as NDJSON lines when asked; the temp folder is removed
        whatever happens."""
        try:
            info = job.info
            with self.admission.video(info.width * info.height, info.frames, job.options.in_flight):
                streaming = job.stream and send is not None
                if streaming:
                    send(ndjson_line({"type": "start", "frames": info.frames, "width": info.width,
                                      "height": info.height, "fps": str(info.fps), "audio": info.has_audio,
                                      "format": job.fmt}))
                painter = FramePainter(self.family, job.styles, job.params)
                target = Path(job.folder.name) / f"painted.{job.fmt}"
                result = video.paint_video(job.source, target, painter, job.options,
                                           progress_sender(send) if streaming else None, self.video_limits)
                style = painter.style.summary if painter.style else {}
                return PaintedVideo(target.read_bytes(), result, style)
        finally:
            job.discard()


def is_video(request: Request) -> bool:
    """Whether the request's bytes are a clip: declared so, or recognised by their first bytes."""
    if not isinstance(request.photo, (bytes, bytearray)):
        return False
    return request.declares_video or video.sniff(bytes(request.photo[:64])) is not None


def video_format(asked: str | None, accept: str | None, container: str) -> str:
    """The output's container: ``format`` (mp4, webm, mov), else a video type the client
    accepts, else the upload's own kind when this server writes it, else mp4."""
    if asked:
        kind = asked.strip().lower()
        if kind not in video.VIDEO_FORMATS:
            raise InputError(f"unsupported output format {kind!r} for a video; choose one of "
                             f"{', '.join(video.VIDEO_FORMATS)}")
        return kind
    for part in (accept or "").split(","):
        media_type = part.split(";")[0].strip().lower()
        for kind, known in video.VIDEO_FORMATS.items():
            if media_type == known:
                return kind
    return container if container in video.VIDEO_FORMATS else "mp4"


def progress_sender(send: Callable[[str], None]) -> Callable[[video.VideoProgress], None]:
    """``core.video``'s progress callback as NDJSON lines: the first and the last frame, and
    at most one line per ``STREAM_INTERVAL_S`` between, so a long clip does not flood the client."""
    last_sent = [float("-inf")]

    def on_progress(progress: video.VideoProgress) -> None:
        now = time.monotonic()
        ends = progress.frames_done in (1, progress.frames_total)
        if ends or now - last_sent[0] >= STREAM_INTERVAL_S:
            send(ndjson_line({"type": "progress", "frames_done": progress.frames_done,
                              "frames_total": progress.frames_total, "elapsed_s": round(progress.elapsed_s, 2),
                              "eta_s": None if progress.eta_s is None else round(progress.eta_s, 1)}))
            last_sent[0] = now

    return on_progress
