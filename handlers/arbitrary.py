"""TorchServe handler for arbitrary style transfer: any painting as the style, one pass.

The archive carries this file, the shared ``core`` package, ``arbitrary_transform.onnx`` (the
served model file) and ``arbitrary_predict.onnx``; the work is ``core.arbitrary``'s.
Request (``POST /predictions/arbitrary``): multipart fields ``content`` and ``style`` (more
styles: ``style_2``, ``style_3``, ... blended by ``style_weights``), or JSON
``{"content": b64, "styles": [b64, ...]}``. Parameters as form fields, JSON keys or
``X-<Name>`` headers: ``strength`` (0..1, along the style vector from the photo's own style),
``style_size`` (default 256), ``style_weights``, ``preserve_colors``, ``format``,
``quality``, ``max_side`` (the photo's; style images have their own pixel limit). The output
has the photo's size. ``tile=true`` is refused. Header ``X-Style-Cache-Hits``: style images
whose vector came from the cache. Metric ``StyleVectorCacheHits`` counts them.
"""

from __future__ import annotations

import logging
import time

from ts.torch_handler.base_handler import BaseHandler

from core import arbitrary, codec
from core.admission import Admission
from core.codec import Limits
from core.errors import InputError, Overloaded, ServerFault
from core.multistyle import refuse_tiling
from core.request import Job, parse_request
from core.runtime_choice import RuntimeSettings
from core.torchserve import RUNTIME_HEADER, answer_error, header, header_params, output_format

logger = logging.getLogger(__name__)

#: Response header: how many of the request's style images had their vector in the cache.
CACHE_HEADER = "X-Style-Cache-Hits"


class ArbitraryHandler(BaseHandler):
    """TorchServe loads the one class of this module as the handler."""

    def initialize(self, context) -> None:
        properties = context.system_properties
        settings = (context.model_yaml_config or {}).get("handler", {})
        self.limits = Limits(
            max_input_pixels=int(settings.get("max_input_pixels", Limits.max_input_pixels)),
            max_pixels=int(settings.get("max_pixels", Limits.max_pixels)),
        )
        gpu_id = properties.get("gpu_id")
        self.painter = arbitrary.ArbitraryStylizer.open(
            properties["model_dir"],
            RuntimeSettings.from_config(settings),
            None if gpu_id is None else int(gpu_id),
            cache_size=int(settings.get("style_cache_size", 256)),
            max_style_input_pixels=int(settings.get("max_style_input_pixels", 64_000_000)),
        )
        # Server-wide bound on work in flight (core.admission), as for the other fast styles.
        self.admission = Admission.for_worker("arbitrary", context.model_yaml_config,
                                              self.painter.transform.settings.threads, self.limits.max_pixels)
        self.initialized = True
        logger.info("arbitrary runs on %s", self.painter.runtime)

    def preprocess(self, data: list[dict]) -> list[Job]:
        """Parses each request and computes its target style vector (the predictor runs here,
        or the cache answers), so a bad style image is a 4xx before any painting."""
        jobs = []
        for idx, row in enumerate(data):
            try:
                row = {**header_params(self.context, idx, arbitrary.PARAMS), **row}
                content_type = header(self.context, idx, "content-type")
                parsed = parse_request(row, content_type, arbitrary.is_image_field, arbitrary.PARAMS, "content")
                params = parsed.params
                refuse_tiling(params, "arbitrary")
                params["format"] = output_format(params["format"], self.context, idx)
                content = codec.decode(parsed.image("content"), self.limits, params["max_side"])
                request = arbitrary.StyleRequest.from_parsed(parsed.images, params)
                hits = self.painter.cache.hits
                params[arbitrary.STYLE_INPUT] = self.painter.target_vector(content, request)
                params["cache_hits"] = self.painter.cache.hits - hits
                self._count_hits(params["cache_hits"])
                jobs.append(Job(image=content, params=params))
            except InputError as error:
                jobs.append(Job(error=error))
        return jobs

    def inference(self, jobs: list[Job]) -> list[Job]:
        good = [job for job in jobs if job.error is None]
        if good:
            vectors = [job.params[arbitrary.STYLE_INPUT] for job in good]
            try:
                with self.admission.fast(sum(job.image.width * job.image.height for job in good)):
                    started = time.perf_counter()
                    paintings = self.painter.paint_vectors([job.image for job in good], vectors,
                                                           [job.params for job in good])
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
            self.context.set_response_header(idx, RUNTIME_HEADER, self.painter.runtime)
            self.context.set_response_header(idx, CACHE_HEADER, str(job.params["cache_hits"]))
            responses.append(codec.encode(job.result, fmt, job.params["quality"], job.params["png_compression"]))
        return responses

    def _count_hits(self, hits: int) -> None:
        metrics = getattr(self.context, "metrics", None)
        if metrics is not None and hits:
            metrics.add_counter("StyleVectorCacheHits", hits, None)

    def handle(self, data, context):
        """BaseHandler.handle, with unforeseen faults answered 500 JSON instead of a dead worker."""
        try:
            return super().handle(data, context)
        except Exception as error:  # noqa: BLE001 - reported, not swallowed
            logger.exception("unexpected failure")
            return [answer_error(context, idx, ServerFault.wrapping(error)) for idx in range(len(data))]
