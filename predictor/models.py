"""KServe models: one per served archive, served by the same service as on TorchServe.

``FastStyleModel`` opens the archive's network through ``core.fast_service.FastStyleService``
with the archive's model config, exactly as its TorchServe handler does (the same family:
``SingleStyle``, ``Multistyle`` or ``Arbitrary``), so the same photo, model and runtime give
the same pixels on both servers; a video clip in the photo's BYTES input comes back as the
painted clip in output ``stylized`` (its summary as response parameters), as on TorchServe.
``GatysModel`` drives ``optimize.service.GatysService``, as the Gatys handler does.
``predictor.protocol`` reads the v2 request into the services' ``Request`` and writes their
``Reply`` back (its summary as response parameters).

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
from PIL import Image

from core import fast_service
from core.errors import InputError, Overloaded
from core.fast_service import Family, FastStyleService
from core.reply import Reply
from core.request import Param, Request
from core.torchserve import RUNTIME_HEADER
from predictor import metrics, protocol
from predictor.archives import Archive

logger = logging.getLogger("kserve.predictor")  # under KServe's configured logger


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
    """What every model shares: the archive, its service (opened by ``load``), the one-at-a-time
    lock, running a request off the event loop with its outcome counted, and the reply."""

    platform = "onnx"
    #: The photo's input.
    photo_input = protocol.IMAGE_INPUT
    #: Whether the photo may come as UINT8 pixels (and the painting go back as pixels).
    takes_pixels = True

    def __init__(self, archive: Archive):
        super().__init__(archive.name, return_response_headers=True)
        self.archive = archive
        self._lock = threading.Lock()

    def open_service(self) -> Any:
        raise NotImplementedError

    def load(self) -> bool:
        self.service = self.open_service()
        metrics.RUNTIME.labels(model=self.name, runtime=self.runtime).set(1)
        logger.info("%s runs on %s", self.name, self.runtime)
        self.ready = True
        return self.ready

    @property
    def runtime(self) -> str:
        return self.service.runtime

    def get_input_types(self) -> list[dict]:
        photo = [{"name": self.photo_input, "datatype": protocol.ENCODED, "shape": [1]}]
        styles = [{"name": protocol.STYLE_INPUT, "datatype": protocol.ENCODED, "shape": [-1]}]
        return photo + styles if self.service.form.styles else photo

    def get_output_types(self) -> list[dict]:
        return [{"name": protocol.OUTPUT, "datatype": protocol.ENCODED, "shape": [1]}]

    def metadata_extension(self) -> dict:
        """Added to ``GET /v2/models/<name>`` (the v2 metadata object has no place for them):
        the pixel form of the same input and output, the parameters, the engine, the service's
        own description."""
        extension: dict[str, Any] = {}
        if self.takes_pixels:
            pixels = {"datatype": protocol.PIXELS, "shape": [-1, -1, 3]}
            extension["alternatives"] = {"inputs": [{"name": self.photo_input, **pixels}],
                                         "outputs": [{"name": protocol.OUTPUT, **pixels}]}
        return {**extension, "parameters": describe_params(self.service.form.params), "runtime": self.runtime,
                "family": self.archive.family, **self.service.describe()}

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

    def reply(self, request: InferRequest, reply: Reply) -> InferResponse:
        """An encoded reply as output ``stylized``, its summary as response parameters."""
        output = protocol.encoded_output(reply.body, reply.media_type, protocol.wants_binary(request))
        return protocol.response(request, self.name, output, {"runtime": self.runtime, **reply.summary})


class FastStyleModel(StyleModel):
    """A fast-style archive of any family (``core.fast_service.FAMILIES``)."""

    def __init__(self, archive: Archive, family: type[Family]):
        super().__init__(archive)
        self.family = family

    def open_service(self) -> FastStyleService:
        return FastStyleService.open(self.family, self.name, self.archive.model_file, self.archive.config)

    def infer(self, request: InferRequest) -> InferResponse:
        style_request = protocol.read_request(request, self.service.form, self.photo_input,
                                              self.service.limits.max_input_pixels)
        refuse_stream(style_request)
        job = self.service.prepare(style_request)
        if job.alone:  # a video: the clip back as the BYTES output, its summary as parameters
            return self.reply(request, self.service.reply(job, self.service.run_alone(job)))
        [painting] = self.service.run([job])
        if isinstance(style_request.photo, Image.Image):  # pixels in, pixels out: nothing to encode
            output = protocol.pixels_output(painting, protocol.wants_binary(request))
            return protocol.response(request, self.name, output, job.summary)
        return self.reply(request, self.service.reply(job, painting))


class GatysModel(StyleModel):
    """Gatys optimization (``handlers/gatys.py``'s archive): inputs ``content`` (BYTES [1]) and
    ``style`` (BYTES [N], one element per style image), parameters as on TorchServe except
    ``stream`` (progress lines have no place in one v2 response). Output ``stylized`` BYTES."""

    platform = "pytorch"
    photo_input = "content"
    takes_pixels = False

    def open_service(self) -> Any:
        from optimize.service import GatysService  # torch: only where a Gatys archive is served

        return GatysService.open(self.name, self.archive.config)

    def infer(self, request: InferRequest) -> InferResponse:
        style_request = protocol.read_request(request, self.service.form, self.photo_input)
        refuse_stream(style_request)
        job = self.service.prepare(style_request)
        return self.reply(request, self.service.reply(job, self.service.run(job)))


def refuse_stream(request: Request) -> None:
    """Progress lines have no place in one v2 response: refused before any upload is written."""
    if str(request.params.get("stream", "")).strip().lower() in ("1", "true", "yes", "on"):
        raise InputError("stream=true is not available over the Open Inference Protocol (one response per "
                         "request); use TorchServe's /predictions/<model> to stream progress")


#: The families served (an archive's family is its TorchServe handler module).
FAMILIES = (*fast_service.FAMILIES, "gatys")


def model_for(archive: Archive) -> StyleModel:
    """The KServe model of an archive's family."""
    if archive.family == "gatys":
        return GatysModel(archive)
    if archive.family in fast_service.FAMILIES:
        return FastStyleModel(archive, fast_service.FAMILIES[archive.family])
    raise ValueError(f"{archive.name}: no KServe model for archives of handler {archive.family!r}; "
                     f"served families: {', '.join(FAMILIES)}")
