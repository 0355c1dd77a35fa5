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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from core import arbitrary, codec, multistyle, style_options
from core.admission import Admission
from core.codec import Limits
from core.reply import Reply
from core.request import Request, RequestForm
from core.runtime_choice import RuntimeSettings
from core.settings import handler_settings
from core.stylizer import Stylizer, TilingPolicy

logger = logging.getLogger(__name__)


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
    form = RequestForm("image", style_options.PARAMS, aliases=("file",))
    tiles = True

    def __init__(self, model_file: Path, runtime: RuntimeSettings, settings: Mapping[str, Any], gpu_id: int | None):
        self.stylizer = Stylizer(model_file, runtime, TilingPolicy.from_config(settings), gpu_id=gpu_id)


class Multistyle(Family):
    """The 26 styles: ``style`` or ``style_weights`` picks or blends them (the network's ``style_weights``)."""

    name = "multistyle"
    form = RequestForm("image", multistyle.PARAMS, aliases=("file",))

    def __init__(self, model_file: Path, runtime: RuntimeSettings, settings: Mapping[str, Any], gpu_id: int | None):
        self.stylizer = multistyle.open_stylizer(model_file, runtime, gpu_id)

    def style(self, photo: Image.Image, styles: list[bytes], params: dict[str, Any]) -> Style:
        weights = multistyle.style_from_params(params)
        return Style({multistyle.STYLE_INPUT: weights}, {"blend": multistyle.describe(weights)})


class Arbitrary(Family):
    """Any painting: the request's style images, their cached style vectors blended (``style_vector``)."""

    name = "arbitrary"
    form = RequestForm("content", arbitrary.PARAMS, styles=True)

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

    photo: Image.Image
    params: dict[str, Any]  # the finishing options (``core.style_options``) and the output's
    fmt: str
    feeds: dict[str, np.ndarray] | None
    summary: dict[str, Any]

    @property
    def pixels(self) -> int:
        return self.photo.width * self.photo.height


class FastStyleService:
    """One opened network of a family, its upload limits and its admission door."""

    def __init__(self, name: str, family: Family, limits: Limits, admission: Admission):
        self.name = name
        self.family = family
        self.limits = limits
        self.admission = admission

    @classmethod
    def open(cls, family: type[Family], name: str, model_file: Path, model_config: Mapping | None,
             gpu_id: int | None = None) -> FastStyleService:
        """Opens model ``name`` (its ``model_file`` and model config) on the engine this machine
        runs it best on; a bad setting stops the worker here with a message naming it."""
        settings = handler_settings(model_config, family.name)  # unknown keys stop the worker
        limits = Limits(max_input_pixels=settings["max_input_pixels"], max_pixels=settings["max_pixels"])
        opened = family(Path(model_file), RuntimeSettings.from_config(settings), settings, gpu_id)
        # Server-wide bound on work in flight (core.admission); bad settings stop the worker here.
        admission = Admission.for_worker(name, model_config, opened.stylizer.settings.threads, limits.max_pixels)
        logger.info("%s runs on %s", name, opened.stylizer.runtime)
        return cls(name, opened, limits, admission)

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

    def prepare(self, request: Request) -> FastJob:
        """Checks the parameters, decodes the photo and gives its style to the network;
        ``InputError`` names the problem."""
        params = self.form.parse_params(request.params)
        if not self.family.tiles:
            multistyle.refuse_tiling(params, self.family.name)
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

    def reply(self, job: FastJob, painting: Image.Image) -> Reply:
        data = codec.encode(painting, job.fmt, job.params["quality"], job.params["png_compression"])
        return Reply(200, codec.MEDIA_TYPES[job.fmt], data, job.summary)
