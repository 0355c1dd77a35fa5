"""TorchServe handler for one fast style: image bytes in, stylized image bytes out.

One archive per style carries this file, the shared ``core`` package and the style's ONNX
files. The network runs through ``core.stylizer.Stylizer``, which picks the engine this
machine runs it best on (ONNX Runtime or OpenVINO, fp32/bf16/int8, a GPU when the worker
has one) and tiles very large images; this handler only speaks TorchServe.

Request (``POST /predictions/<style>``): the image as the raw body, as multipart field
``image``, or JSON ``{"image": "<base64>", ...}``. Parameters (``core.style_options.PARAMS``)
as form fields, JSON keys or ``X-<Name>`` headers. A bad request gets a 4xx JSON body naming
the problem; the worker carries on. The response header ``X-Style-Runtime`` names the engine.
Behind KServe's v2 protocol the image is a BYTES input named ``image`` (base64) and the
output is the encoded image as base64.
"""

from __future__ import annotations

import base64
import logging
import os
import time

from ts.metrics.dimension import Dimension
from ts.torch_handler.base_handler import BaseHandler

from core import codec
from core.admission import Admission
from core.codec import Limits
from core.errors import InputError, Overloaded, ServerFault
from core.request import Job, from_kserve_v2, is_kserve_v2, parse_request
from core.runtime_choice import RuntimeSettings
from core.style_options import PARAMS
from core.stylizer import Stylizer, TilingPolicy
from core.torchserve import RUNTIME_HEADER, answer_error, header, header_params, output_format

logger = logging.getLogger(__name__)

IMAGE_FIELDS = ("image", "file")


class FastStyleHandler(BaseHandler):
    """TorchServe loads the one class of this module as the handler."""

    def initialize(self, context) -> None:
        """Opens the style's stylizer once per worker. A bad setting (runtime, tiling)
        stops the worker here with a message naming it."""
        properties = context.system_properties
        settings = (context.model_yaml_config or {}).get("handler", {})
        self.limits = Limits(
            max_input_pixels=int(settings.get("max_input_pixels", Limits.max_input_pixels)),
            max_pixels=int(settings.get("max_pixels", Limits.max_pixels)),
        )
        model = os.path.join(properties["model_dir"], context.manifest["model"]["serializedFile"])
        gpu_id = properties.get("gpu_id")
        self.stylizer = Stylizer(
            model,
            RuntimeSettings.from_config(settings),
            TilingPolicy.from_config(settings),
            gpu_id=None if gpu_id is None else int(gpu_id),
        )
        self.style = context.manifest["model"]["modelName"]
        # Server-wide bound on work in flight (core.admission); bad settings stop the worker here.
        self.admission = Admission.for_worker(self.style, context.model_yaml_config, self.stylizer.settings.threads,
                                              self.limits.max_pixels)
        self.kserve_v2 = False
        self.initialized = True
        logger.info("style %s runs on %s", self.style, self.stylizer.runtime)

    def preprocess(self, data: list[dict]) -> list[Job]:
        """Parses and decodes each request; a bad one becomes a Job carrying its error."""
        # Behind KServe (service_envelope=kservev2) one request arrives as its v2 inputs.
        self.kserve_v2 = is_kserve_v2(data)
        if self.kserve_v2:
            data = [from_kserve_v2(data)]
        jobs = []
        for idx, row in enumerate(data):
            try:
                row = {**header_params(self.context, idx, PARAMS), **row}
                content_type = header(self.context, idx, "content-type")
                parsed = parse_request(row, content_type, lambda n: n in IMAGE_FIELDS, PARAMS, "image")
                if not parsed.images:
                    raise InputError("no image in the request: send it as the body or as field 'image'")
                params = parsed.params
                params["format"] = output_format(params["format"], self.context, idx)
                image = codec.decode(next(iter(parsed.images.values())), self.limits, params["max_side"])
                jobs.append(Job(image=image, params=params))
            except InputError as error:
                jobs.append(Job(error=error))
        return jobs

    def inference(self, jobs: list[Job]) -> list[Job]:
        """Paints the good jobs in one stylizer call (it batches same-size images and tiles
        large ones)."""
        good = [job for job in jobs if job.error is None]
        if good:
            try:
                with self.admission.fast(sum(job.image.width * job.image.height for job in good)):
                    started = time.perf_counter()
                    paintings = self.stylizer.paint([job.image for job in good], [job.params for job in good])
            except Overloaded as error:  # answered 503 with Retry-After
                for job in good:
                    job.error = error
                return jobs
            self._record_latency(started, good)
            for job, painting in zip(good, paintings, strict=True):
                job.result = painting
        return jobs

    def postprocess(self, jobs: list[Job]) -> list[bytes | str]:
        """Encodes each painting and sets its response's status and headers."""
        responses = []
        for idx, job in enumerate(jobs):
            if job.error is not None:
                responses.append(answer_error(self.context, idx, job.error))
                continue
            fmt = job.params["format"]
            encoded = codec.encode(job.result, fmt, job.params["quality"], job.params["png_compression"])
            if self.kserve_v2:  # a v2 BYTES output: the encoded image as base64 text
                responses.append(base64.b64encode(encoded).decode("ascii"))
                continue
            self.context.set_response_content_type(idx, codec.MEDIA_TYPES[fmt])
            self.context.set_response_header(idx, RUNTIME_HEADER, self.stylizer.runtime)
            responses.append(encoded)
        return responses

    def describe_handle(self) -> dict:
        """``GET /models/<style>?customized=true``: the engine chosen and what was measured."""
        return {"style": self.style, **self.stylizer.describe()}

    def _record_latency(self, started: float, group: list[Job]) -> None:
        metrics = getattr(self.context, "metrics", None)
        if metrics is None:
            return
        per_image_ms = (time.perf_counter() - started) * 1000 / len(group)
        megapixels = sum(job.image.width * job.image.height for job in group) / 1e6
        runtime = [Dimension("Runtime", self.stylizer.runtime)]
        metrics.add_time("StyleInferenceTime", per_image_ms, None, "ms", runtime)
        metrics.add_size("StyleInputMegapixels", megapixels, None, "MB")

    def handle(self, data, context):
        """BaseHandler.handle with a last line of defence: a fault we did not foresee
        answers 500 with JSON for this batch instead of killing the worker."""
        try:
            return super().handle(data, context)
        except Exception as error:  # noqa: BLE001 - reported, not swallowed
            logger.exception("unexpected failure")
            return [answer_error(context, idx, ServerFault.wrapping(error)) for idx in range(len(data))]
