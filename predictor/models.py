"""KServe models: one per served archive, painting through the same runtime as TorchServe.

``FastStyleModel`` opens a ``core.stylizer.Stylizer`` from the archive's ONNX file with the
archive's handler settings, exactly as ``handlers/fast_style.py`` does, so the same photo,
model and runtime give the same pixels on both engines. ``MultistyleModel`` adds the style
blend input, ``ArbitraryModel`` the style images (``core.arbitrary``, as its handler);
``GatysModel`` drives ``optimize.service.GatysService``, as the Gatys handler does.

A request runs in a worker thread (the event loop keeps answering health checks), one at a
time per model like TorchServe's one worker per model, inside the server-wide admission
control of ``core.admission`` (503 ``Overloaded`` when it does not fit).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import kserve
from kserve.protocol.infer_type import InferRequest, InferResponse

from core import arbitrary, multistyle
from core.admission import Admission
from core.codec import Limits
from core.errors import InputError, Overloaded
from core.request import Param, decode_base64
from core.runtime_choice import RuntimeSettings
from core.style_options import PARAMS
from core.stylizer import Stylizer, TilingPolicy
from core.torchserve import RUNTIME_HEADER
from predictor import metrics, protocol
from predictor.archives import Archive

logger = logging.getLogger("kserve.predictor")  # under KServe's configured logger


def limits_of(settings: Mapping) -> Limits:
    """The archive's upload limits, read as the TorchServe handler reads them."""
    return Limits(
        max_input_pixels=int(settings.get("max_input_pixels", Limits.max_input_pixels)),
        max_pixels=int(settings.get("max_pixels", Limits.max_pixels)),
    )


def describe_params(spec: Mapping[str, Param]) -> dict[str, dict]:
    """The parameters as model metadata: type, default, range or choices, help."""
    described = {}
    for name, param in spec.items():
        entry: dict[str, Any] = {"type": param.kind.__name__, "default": param.default, "help": param.help}
        if param.low is not None:
            entry["min"] = param.low
        if param.high is not None:
            entry["max"] = param.high
        if param.choices is not None:
            entry["choices"] = list(param.choices)
        described[name] = entry
    return described


class StyleModel(kserve.Model):
    """What every style model shares: the archive, the admission door, the one-at-a-time lock,
    and running a request off the event loop with its outcome counted."""

    platform = "onnx"
    params_spec: Mapping[str, Param] = PARAMS

    def __init__(self, archive: Archive):
        super().__init__(archive.name, return_response_headers=True)
        self.archive = archive
        self.settings = archive.handler_settings
        self.limits = limits_of(self.settings)
        self._lock = threading.Lock()
        self.admission: Admission | None = None

    @property
    def runtime(self) -> str:
        raise NotImplementedError

    def get_input_types(self) -> list[dict]:
        return [{"name": protocol.IMAGE_INPUT, "datatype": protocol.ENCODED, "shape": [1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": protocol.OUTPUT, "datatype": protocol.ENCODED, "shape": [1]}]

    def metadata_extension(self) -> dict:
        """Added to ``GET /v2/models/<name>`` (the v2 metadata object has no place for them):
        the pixel form of the same input and output, the parameters, the engine."""
        pixels = {"datatype": protocol.PIXELS, "shape": [-1, -1, 3]}
        return {
            "alternatives": {"inputs": [{"name": protocol.IMAGE_INPUT, **pixels}],
                             "outputs": [{"name": protocol.OUTPUT, **pixels}]},
            "parameters": describe_params(self.params_spec),
            "runtime": self.runtime,
            "family": self.archive.family,
        }

    async def predict(self, payload: InferRequest, headers: dict | None = None,
                      response_headers: dict | None = None) -> InferResponse:
        response = await asyncio.to_thread(self._answer, payload)
        if response_headers is not None:
            response_headers[RUNTIME_HEADER] = self.runtime
        return response

    def _answer(self, request: InferRequest) -> InferResponse:
        started = time.perf_counter()
        outcome = "fault"
        try:
            with self._lock:
                response = self.infer(request)
            outcome = "ok"
            return response
        except InputError:
            outcome = "input_error"
            raise
        except Overloaded:
            outcome = "overloaded"
            raise
        finally:
            metrics.record(self.name, self.runtime, outcome, time.perf_counter() - started)

    def infer(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError


class FastStyleModel(StyleModel):
    """One fast style (``handlers/fast_style.py``'s archives): image in, painting out."""

    INPUTS: tuple[str, ...] = (protocol.IMAGE_INPUT,)

    def load(self) -> bool:
        self.stylizer = self.open_stylizer()
        self.admission = Admission.for_worker(self.name, self.archive.config, self.stylizer.settings.threads,
                                              self.limits.max_pixels)
        metrics.RUNTIME.labels(model=self.name, runtime=self.runtime).set(1)
        logger.info("%s runs on %s", self.name, self.runtime)
        self.ready = True
        return self.ready

    def open_stylizer(self) -> Stylizer:
        return Stylizer(self.archive.model_file, RuntimeSettings.from_config(self.settings),
                        TilingPolicy.from_config(self.settings))

    @property
    def runtime(self) -> str:
        return self.stylizer.runtime

    def metadata_extension(self) -> dict:
        return {**super().metadata_extension(), **self.stylizer.describe()}

    def infer(self, request: InferRequest) -> InferResponse:
        protocol.check_inputs(request, self.INPUTS)
        protocol.check_outputs(request)
        photo = protocol.read_photo(request, self.params_spec, self.limits)
        extra = self.extra_inputs(request, photo.params)
        with self.admission.fast(photo.image.width * photo.image.height):
            painting = self.paint(photo, extra)
        output = protocol.image_output(painting, photo, protocol.wants_binary(request))
        return protocol.response(request, self.name, [output], self.response_parameters(photo.params))

    def extra_inputs(self, request: InferRequest, params: dict) -> dict | None:
        """Further graph inputs the request asks for (none for a single-style network)."""
        return None

    def paint(self, photo: protocol.Photo, extra: dict | None):
        return self.stylizer.paint([photo.image], [photo.params], [extra])[0]

    def response_parameters(self, params: dict) -> dict:
        return {"runtime": self.runtime}


class MultistyleModel(FastStyleModel):
    """The 26-style network (``handlers/multistyle.py``): parameter ``style`` picks or blends."""

    params_spec = multistyle.PARAMS

    def open_stylizer(self) -> Stylizer:
        return multistyle.open_stylizer(self.archive.model_file, RuntimeSettings.from_config(self.settings))

    def extra_inputs(self, request: InferRequest, params: dict) -> dict:
        multistyle.refuse_tiling(params, self.name)
        params[multistyle.STYLE_INPUT] = multistyle.style_from_params(params)
        return {multistyle.STYLE_INPUT: params[multistyle.STYLE_INPUT]}

    def response_parameters(self, params: dict) -> dict:
        return {**super().response_parameters(params), "blend": multistyle.describe(params[multistyle.STYLE_INPUT])}


class ArbitraryModel(FastStyleModel):
    """Any painting as the style (``handlers/arbitrary.py``): input ``style`` BYTES [N] holds
    the style images (blended by ``style_weights``) beside the photo in ``image``."""

    params_spec = arbitrary.PARAMS
    INPUTS = (protocol.IMAGE_INPUT, "style")

    def open_stylizer(self) -> Stylizer:
        self.painter = arbitrary.ArbitraryStylizer.open(
            self.archive.folder, RuntimeSettings.from_config(self.settings),
            cache_size=int(self.settings.get("style_cache_size", 256)),
            max_style_input_pixels=int(self.settings.get("max_style_input_pixels", 64_000_000)),
        )
        return self.painter.transform

    def get_input_types(self) -> list[dict]:
        return [*super().get_input_types(), {"name": "style", "datatype": protocol.ENCODED, "shape": [-1]}]

    def extra_inputs(self, request: InferRequest, params: dict) -> dict:
        multistyle.refuse_tiling(params, self.name)
        elements = protocol.encoded_elements(protocol.input_named(request, "style"))
        # The TorchServe request's field names: style, style_2, style_3, ...
        images = {("style" if i == 0 else f"style_{i + 1}"): element if isinstance(element, bytes)
                  else decode_base64("style", element) for i, element in enumerate(elements)}
        hits = self.painter.cache.hits
        return {"request": arbitrary.StyleRequest.from_parsed(images, params), "hits_before": hits}

    def paint(self, photo: protocol.Photo, extra: dict | None):
        vector = self.painter.target_vector(photo.image, extra["request"])
        photo.params["cache_hits"] = self.painter.cache.hits - extra["hits_before"]
        return self.painter.paint_vectors([photo.image], [vector], [photo.params])[0]

    def response_parameters(self, params: dict) -> dict:
        return {**super().response_parameters(params), "cache_hits": int(params.get("cache_hits", 0))}


class GatysModel(StyleModel):
    """Gatys optimization (``handlers/gatys.py``'s archive): inputs ``content`` (BYTES [1]) and
    ``style`` (BYTES [N], one element per style image), parameters as on TorchServe except
    ``stream`` (progress lines have no place in one v2 response). Output ``stylized`` BYTES."""

    platform = "pytorch"
    INPUTS = ("content", "style")

    def load(self) -> bool:
        import torch

        from optimize.service import GatysService
        from optimize.serving import ServingLimits

        limits = ServingLimits.from_model_config(self.archive.config)
        torch.set_num_threads(limits.cpu_threads())
        self.service = GatysService(limits, "cpu")
        self.params_spec = limits.params()
        self.admission = Admission.for_worker(self.name, self.archive.config, limits.cpu_threads())
        metrics.RUNTIME.labels(model=self.name, runtime=self.runtime).set(1)
        self.ready = True
        return self.ready

    @property
    def runtime(self) -> str:
        return "torch/fp32"

    def get_input_types(self) -> list[dict]:
        return [{"name": "content", "datatype": protocol.ENCODED, "shape": [1]},
                {"name": "style", "datatype": protocol.ENCODED, "shape": [-1]}]

    def metadata_extension(self) -> dict:
        extension = super().metadata_extension()
        extension.pop("alternatives")
        extension.update(self.service.describe())
        return extension

    def infer(self, request: InferRequest) -> InferResponse:
        protocol.check_inputs(request, self.INPUTS)
        protocol.check_outputs(request)
        content = protocol.input_named(request, "content")
        styles = protocol.encoded_elements(protocol.input_named(request, "style"))
        contents = protocol.encoded_elements(content)
        if len(contents) != 1:
            raise InputError(f"input 'content' must hold one encoded image (shape [1]), got {list(content.shape)}")
        # The TorchServe request's field names: content, style, style_2, style_3, ...
        row = {"content": contents[0], **{("style" if i == 0 else f"style_{i + 1}"): s for i, s in enumerate(styles)}}
        row.update(protocol.request_parameters(request, content))
        parsed = self.service.parse(row, "")
        if parsed.params["stream"]:
            raise InputError("stream=true is not available over the Open Inference Protocol (one response per "
                             "request); use TorchServe's /predictions/gatys to stream progress")
        job = self.service.prepare(parsed)
        with self.admission.gatys(job.content.width * job.content.height):
            result = self.service.run(job)
        reply = self.service.reply(job, result)
        output = protocol.encoded_output(reply.body, reply.media_type, protocol.wants_binary(request))
        summary = {name.removeprefix("X-Gatys-").lower().replace("-", "_"): value
                   for name, value in reply.headers.items()}
        return protocol.response(request, self.name, [output], {"runtime": self.runtime, **summary})


#: Model family (the archive's TorchServe handler module) -> its KServe model.
FAMILIES: dict[str, type[StyleModel]] = {"fast_style": FastStyleModel, "multistyle": MultistyleModel,
                                         "arbitrary": ArbitraryModel, "gatys": GatysModel}


def model_for(archive: Archive) -> StyleModel:
    family = FAMILIES.get(archive.family)
    if family is None:
        raise ValueError(f"{archive.name}: no KServe model for archives of handler {archive.family!r}; "
                         f"served families: {', '.join(FAMILIES)}")
    return family(archive)
