"""TorchServe handler for the 26-style network (Dumoulin et al., Apache-2.0 weights).

The archive carries this file, the shared ``core`` package and ``multistyle.onnx``. Request
(``POST /predictions/multistyle``): the image as for the other fast styles (raw body,
multipart field ``image``, or JSON ``{"image": "<base64>"}``), and the style as ``style``
(index 0-25, a name from ``core.multistyle.STYLE_NAMES``, or a blend ``3:0.5,12:0.5``) in a
form field, a JSON key or an ``X-Style`` header, or JSON ``style_weights`` (26 numbers).
Weights must be non-negative; they are normalised. ``strength``, ``preserve_colors``,
``format``, ``quality`` and ``max_side`` as elsewhere; ``tile=true`` is refused (this
network runs whole images). Response headers ``X-Style-Runtime`` (the engine) and
``X-Style-Blend`` (the normalised blend). Bad requests get a 4xx JSON body naming the problem.
"""

from __future__ import annotations

import logging
import os
import time

from ts.torch_handler.base_handler import BaseHandler

from core import codec, multistyle
from core.admission import Admission
from core.codec import Limits
from core.errors import InputError, Overloaded, ServerFault
from core.request import Job, parse_request
from core.runtime_choice import RuntimeSettings
from core.torchserve import RUNTIME_HEADER, answer_error, header, header_params, output_format

logger = logging.getLogger(__name__)

IMAGE_FIELDS = ("image", "file")


class MultistyleHandler(BaseHandler):
    """TorchServe loads the one class of this module as the handler."""

    def initialize(self, context) -> None:
        properties = context.system_properties
        settings = (context.model_yaml_config or {}).get("handler", {})
        self.limits = Limits(
            max_input_pixels=int(settings.get("max_input_pixels", Limits.max_input_pixels)),
            max_pixels=int(settings.get("max_pixels", Limits.max_pixels)),
        )
        model = os.path.join(properties["model_dir"], context.manifest["model"]["serializedFile"])
        gpu_id = properties.get("gpu_id")
        self.stylizer = multistyle.open_stylizer(
            model, RuntimeSettings.from_config(settings), None if gpu_id is None else int(gpu_id)
        )
        # Server-wide bound on work in flight (core.admission), as for the other fast styles.
        self.admission = Admission.for_worker("multistyle", context.model_yaml_config, self.stylizer.settings.threads,
                                              self.limits.max_pixels)
        self.initialized = True
        logger.info("multistyle runs on %s", self.stylizer.runtime)

    def preprocess(self, data: list[dict]) -> list[Job]:
        """Parses each request, its style included; a bad one becomes a Job carrying its error."""
        jobs = []
        for idx, row in enumerate(data):
            try:
                row = {**header_params(self.context, idx, multistyle.PARAMS), **multistyle.with_text_style(row)}
                content_type = header(self.context, idx, "content-type")
                parsed = parse_request(row, content_type, lambda n: n in IMAGE_FIELDS, multistyle.PARAMS, "image")
                if not parsed.images:
                    raise InputError("no image in the request: send it as the body or as field 'image'")
                params = parsed.params
                multistyle.refuse_tiling(params, "multistyle")
                params[multistyle.STYLE_INPUT] = multistyle.style_from_params(params)
                params["format"] = output_format(params["format"], self.context, idx)
                image = codec.decode(next(iter(parsed.images.values())), self.limits, params["max_side"])
                jobs.append(Job(image=image, params=params))
            except InputError as error:
                jobs.append(Job(error=error))
        return jobs

    def inference(self, jobs: list[Job]) -> list[Job]:
        """One stylizer call: same-size images with the same blend share a network call."""
        good = [job for job in jobs if job.error is None]
        if good:
            extra = [{multistyle.STYLE_INPUT: job.params[multistyle.STYLE_INPUT]} for job in good]
            try:
                with self.admission.fast(sum(job.image.width * job.image.height for job in good)):
                    started = time.perf_counter()
                    paintings = self.stylizer.paint([job.image for job in good], [job.params for job in good], extra)
            except Overloaded as error:  # answered 503 with Retry-After
                for job in good:
                    job.error = error
                return jobs
            metrics = getattr(self.context, "metrics", None)
            if metrics is not None:
                metrics.add_time("StyleInferenceTime", (time.perf_counter() - started) * 1000 / len(good), None, "ms")
            for job, painting in zip(good, paintings, strict=True):
                job.result = painting
        return jobs

    def postprocess(self, jobs: list[Job]) -> list[bytes | str]:
        responses = []
        for idx, job in enumerate(jobs):
            if job.error is not None:
                responses.append(answer_error(self.context, idx, job.error))
                continue
            fmt = job.params["format"]
            self.context.set_response_content_type(idx, codec.MEDIA_TYPES[fmt])
            self.context.set_response_header(idx, RUNTIME_HEADER, self.stylizer.runtime)
            self.context.set_response_header(idx, "X-Style-Blend",
                                             multistyle.describe(job.params[multistyle.STYLE_INPUT]))
            responses.append(codec.encode(job.result, fmt, job.params["quality"], job.params["png_compression"]))
        return responses

    def handle(self, data, context):
        """BaseHandler.handle, with unforeseen faults answered 500 JSON instead of a dead worker."""
        try:
            return super().handle(data, context)
        except Exception as error:  # noqa: BLE001 - reported, not swallowed
            logger.exception("unexpected failure")
            return [answer_error(context, idx, ServerFault.wrapping(error)) for idx in range(len(data))]
