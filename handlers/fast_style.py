"""TorchServe handler for one fast style: image bytes in, stylized image bytes out.

One archive per style carries this file, the shared ``core`` package and the style's
``.onnx``. ONNX Runtime runs the network (CUDA when the worker has a GPU and
onnxruntime-gpu is installed, else CPU).

Request (``POST /predictions/<style>``): the image as the raw body (any Content-Type),
as multipart field ``image``, or JSON ``{"image": "<base64>", ...}``. Parameters, as form
fields, JSON keys or ``X-<Name>`` headers (TorchServe does not pass the query string to
handlers): ``format`` (png|jpeg|webp; else the Accept header; else png), ``quality``,
``max_side``, ``strength`` (0..1 blend with the photo), ``preserve_colors`` and ``tile``
(true/false forces tiled/whole-image; by default images above ``$STYLE_TILE_THRESHOLD``
or the model config's ``handler.tile_threshold`` pixels, 2048² if neither is set, run in
``handler.tile_size`` tiles with the whole image's statistics: see core/tiling.py). A bad
request gets a 4xx JSON body naming the problem; the worker carries on. Behind KServe's
v2 protocol the image is a BYTES input named ``image`` (base64) and the output is the
encoded image as base64.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time

import numpy as np
import onnxruntime as ort
from ts.torch_handler.base_handler import BaseHandler

from core import codec, tiling
from core.codec import InputError, Limits
from core.onnx_session import providers, session_options
from core.request import Job, from_kserve_v2, is_kserve_v2, parse_request
from core.style_options import PARAMS, finish

logger = logging.getLogger(__name__)

IMAGE_FIELDS = ("image", "file")


class FastStyleHandler(BaseHandler):
    """TorchServe loads the one class of this module as the handler."""

    def initialize(self, context) -> None:
        """Opens the ONNX session once per worker, on the GPU the worker was given if any."""
        properties = context.system_properties
        model_dir = properties["model_dir"]
        settings = (context.model_yaml_config or {}).get("handler", {})
        self.limits = Limits(
            max_input_pixels=int(settings.get("max_input_pixels", Limits.max_input_pixels)),
            max_pixels=int(settings.get("max_pixels", Limits.max_pixels)),
        )
        model = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        threads = int(settings.get("intra_op_threads", 0))
        devices = providers(properties.get("gpu_id"))
        self.session = ort.InferenceSession(model, sess_options=session_options(threads), providers=devices)
        self.style = context.manifest["model"]["modelName"]
        self.tile_threshold = tiling.threshold(settings.get("tile_threshold"))
        self._tiler_args = {
            "model": model,
            "layout": tiling.Layout(tile=int(settings.get("tile_size", tiling.Layout.tile))),
            "threads": threads,
            "providers": devices,
        }
        self._tiler: tiling.TiledStylizer | None = None
        self.kserve_v2 = False
        self.initialized = True
        logger.info("style %s on %s", self.style, self.session.get_providers()[0])

    def preprocess(self, data: list[dict]) -> list[Job]:
        """Parses and decodes each request; a bad one becomes a Job carrying its error."""
        # Behind KServe (service_envelope=kservev2) one request arrives as its v2 inputs.
        self.kserve_v2 = is_kserve_v2(data)
        if self.kserve_v2:
            data = [from_kserve_v2(data)]
        jobs = []
        for idx, row in enumerate(data):
            try:
                row = {**self._header_params(idx), **row}
                parsed = parse_request(
                    row, self._header(idx, "content-type"), lambda n: n in IMAGE_FIELDS, PARAMS, "image"
                )
                if not parsed.images:
                    raise InputError("no image in the request: send it as the body or as field 'image'")
                params = parsed.params
                params["format"] = (
                    codec.parse_format(params["format"])
                    or codec.format_from_accept(self._header(idx, "accept"))
                    or "png"
                )
                image = codec.decode(next(iter(parsed.images.values())), self.limits, params["max_side"])
                jobs.append(Job(image=image, params=params))
            except InputError as error:
                jobs.append(Job(error=error))
        return jobs

    def inference(self, jobs: list[Job]) -> list[Job]:
        """Runs the network; images of the same size share one batched call, and large
        ones (or those asking for it) run alone, tiled, to bound the worker's memory."""
        by_size: dict[tuple[int, int], list[Job]] = {}
        for job in jobs:
            if job.error is None and self._tiled(job):
                started = time.perf_counter()
                job.result = self.tiler(codec.to_array(job.image))
                self._record_latency(started, [job])
            elif job.error is None:
                by_size.setdefault(job.image.size, []).append(job)
        for group in by_size.values():
            batch = np.stack([codec.to_array(job.image) for job in group])
            started = time.perf_counter()
            outputs = self.session.run(["stylized"], {"image": batch})[0]
            self._record_latency(started, group)
            for job, output in zip(group, outputs, strict=True):
                job.result = output
        return jobs

    def _tiled(self, job: Job) -> bool:
        return tiling.wants_tiles(job.image.height, job.image.width, job.params["tile"], self.tile_threshold)

    @property
    def tiler(self) -> tiling.TiledStylizer:
        """Built on the first tiled request: its 17 sessions (from the archive's tiling
        bundle) take time and memory that workers serving only small images never need."""
        if self._tiler is None:
            self._tiler = tiling.TiledStylizer(**self._tiler_args)
        return self._tiler

    def postprocess(self, jobs: list[Job]) -> list[bytes | str]:
        """Applies strength/colour options, encodes, and sets each response's status."""
        responses = []
        for idx, job in enumerate(jobs):
            if job.error is not None:
                responses.append(self._error(idx, job.error))
                continue
            result = finish(codec.from_array(job.result), job.image, job.params)
            fmt = job.params["format"]
            encoded = codec.encode(result, fmt, job.params["quality"])
            if self.kserve_v2:  # a v2 BYTES output: the encoded image as base64 text
                responses.append(base64.b64encode(encoded).decode("ascii"))
                continue
            self.context.set_response_content_type(idx, codec.MEDIA_TYPES[fmt])
            responses.append(encoded)
        return responses

    def _error(self, idx: int, error: InputError) -> str:
        self.context.set_response_status(error.status, str(error), idx)
        self.context.set_response_content_type(idx, "application/json")
        return json.dumps(error.as_json())

    def _header(self, idx: int, name: str) -> str:
        """A request header by lower-case name ('' if absent). For content-type, the raw
        body's own type comes first: TorchServe records it per input field."""
        properties = self.context.request_processor[idx].get_request_properties()
        body = properties.get("body")
        if name == "content-type" and isinstance(body, dict) and body.get("content-type"):
            return body["content-type"]
        for key, value in properties.items():
            if key.lower() == name and isinstance(value, str):
                return value
        return ""

    def _header_params(self, idx: int) -> dict[str, str]:
        """Parameters sent as ``X-Max-Side: 512`` style headers (for raw-body requests)."""
        found = {}
        for name in PARAMS:
            value = self._header(idx, "x-" + name.replace("_", "-"))
            if value:
                found[name] = value
        return found

    def _record_latency(self, started: float, group: list[Job]) -> None:
        metrics = getattr(self.context, "metrics", None)
        if metrics is None:
            return
        per_image_ms = (time.perf_counter() - started) * 1000 / len(group)
        megapixels = sum(job.image.width * job.image.height for job in group) / 1e6
        metrics.add_time("StyleInferenceTime", per_image_ms, None, "ms")
        metrics.add_size("StyleInputMegapixels", megapixels, None, "MB")

    def handle(self, data, context):
        """BaseHandler.handle with a last line of defence: a fault we did not foresee
        answers 500 with JSON for this batch instead of killing the worker."""
        try:
            return super().handle(data, context)
        except Exception as error:  # noqa: BLE001 - reported, not swallowed
            logger.exception("unexpected failure")
            fault = InputError(f"internal error: {type(error).__name__}: {error}", status=500)
            return [self._error(idx, fault) for idx in range(len(data))]
