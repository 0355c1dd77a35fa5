"""TorchServe handler for ``gatys``: iterative (Gatys et al.) style transfer, one request at a time.

Request: multipart fields ``content``, ``style`` (more: ``style_2``, ``style_3``, ...) and the
parameters as form fields, or JSON ``{"content": b64, "styles": [b64, ...], ...params}``.
Response: the image (PNG unless ``format``/Accept say otherwise); with ``stream=true``,
newline-delimited JSON progress messages whose last line carries the image as base64.

Optimization runs under a time budget derived from the model's ``responseTimeout`` (see
``optimize.serving.ServingLimits``); when it runs out the best image so far is returned, and
the response says so (``stop_reason``, ``X-Gatys-*`` headers).
"""

from __future__ import annotations

import json
import logging
import random
import time
from http import HTTPStatus

import torch
from ts.handler_utils.utils import send_intermediate_predict_response
from ts.torch_handler.base_handler import BaseHandler

from core.codec import MEDIA_TYPES, InputError, Limits, decode, encode, format_from_accept, parse_format
from core.request import parse_request
from optimize.serving import (
    Job,
    ServingLimits,
    WeightsUnavailable,
    is_image_field,
    preview_image,
    progress_message,
    result_message,
    result_summary,
    start_message,
    style_fields,
)
from optimize.transfer import (
    Progress,
    Result,
    Settings,
    check_sizes,
    level_sizes,
    smallest_side,
    stylize,
    to_image,
)
from optimize.vgg import VGGWeightsMissing, load_vgg19_features

# TorchServe loads the one class this module defines as the handler: helper classes (Job,
# WeightsUnavailable) live in optimize.serving.
log = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"


class GatysHandler(BaseHandler):
    def initialize(self, context) -> None:
        """Reads limits, picks the device, loads VGG19 if present.

        Missing weights do not fail initialization: the model still registers and every
        request gets a 501 that says how to supply them, instead of a worker that keeps
        crashing on load with the reason buried in a log.
        """
        self.context = context
        self.manifest = context.manifest
        self.limits = ServingLimits.from_model_config(getattr(context, "model_yaml_config", None))
        gpu = context.system_properties.get("gpu_id")
        self.device = torch.device(f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(self.limits.cpu_threads())
        self.features, self.weights_error = None, None
        try:
            self.features = load_vgg19_features().to(self.device).eval()
        except VGGWeightsMissing as error:
            self.weights_error = str(error)
            log.error("gatys: serving 501 to every request until the weights exist: %s", error)
        self.initialized = True

    def preprocess(self, data: list[dict]) -> list[Job | InputError | WeightsUnavailable]:
        """Validates each request and decodes its images; errors are kept per request."""
        jobs = []
        for idx, row in enumerate(data):
            if self.weights_error is not None:
                jobs.append(WeightsUnavailable(self.weights_error))
                continue
            try:
                jobs.append(self._job(idx, row))
            except InputError as error:
                jobs.append(error)
        return jobs

    def inference(self, jobs: list, *args, **kwargs) -> list:
        """Runs the optimization for each valid job, streaming progress when asked."""
        return [job if not isinstance(job, Job) else self._run(idx, job) for idx, job in enumerate(jobs)]

    def postprocess(self, outputs: list) -> list[bytes | str]:
        """Encodes each result as the image (or final NDJSON line) or a JSON error."""
        responses = []
        for idx, output in enumerate(outputs):
            if isinstance(output, (InputError, WeightsUnavailable)):
                self.context.set_response_status(output.status, _phrase(output.status), idx)
                self.context.set_response_content_type(idx, "application/json")
                responses.append(json.dumps(output.as_json()))
                continue
            job, result = output
            data = encode(result.image, job.fmt)
            summary = result_summary(result)
            for name in ("iterations_done", "stop_reason", "seed", "elapsed_s"):
                self.context.set_response_header(idx, f"X-Gatys-{name.replace('_', '-').title()}",
                                                 str(summary[name]))
            if job.stream:
                self.context.set_response_content_type(idx, NDJSON)
                responses.append(result_message(result, data, job.fmt, MEDIA_TYPES[job.fmt]))
            else:
                self.context.set_response_content_type(idx, MEDIA_TYPES[job.fmt])
                responses.append(data)
        return responses

    # --- helpers -----------------------------------------------------------------------------

    def _job(self, idx: int, row: dict) -> Job:
        limits = self.limits
        headers = _headers(self.context, idx)
        content_type = headers.get("content-type", "")
        parsed = parse_request(row, content_type, is_image_field, limits.params(), "content")
        params = parsed.params
        names = style_fields(parsed.images)
        if not names:
            raise InputError("missing style image: send a 'style' file field (JSON: \"styles\": [b64, ...])")
        if len(names) > limits.max_styles:
            raise InputError(f"{len(names)} style images sent; this server allows at most "
                             f"{limits.max_styles}")
        image_limits = Limits(max_input_pixels=limits.max_input_pixels)
        content = decode(parsed.image("content"), image_limits, params["max_side"])
        styles = [decode(parsed.images[name], image_limits) for name in names]
        fmt = parse_format(params["format"]) or format_from_accept(headers.get("accept")) or "png"
        seed = params["seed"] if params["seed"] is not None else random.SystemRandom().randrange(2**31)
        settings = Settings(
            iterations=params["iterations"],
            max_side=params["max_side"],
            optimizer=params["optimizer"],
            seed=seed,
            content_weight=params["content_weight"],
            style_weight=params["style_weight"],
            tv_weight=params["tv_weight"],
            init=params["init"],
            original_colors=params["original_colors"],
            style_scale=params["style_scale"],
            scales=params["scales"],
            style_weights=tuple(params["style_weights"]) if params["style_weights"] is not None else None,
            history_size=limits.history_size,
        )
        try:
            settings.validate(len(styles))
            check_sizes(content.size, styles, settings)
        except ValueError as error:
            raise InputError(str(error)) from None
        return Job(content, styles, settings, params["stream"], params["preview"], fmt, params["max_seconds"])

    def _run(self, idx: int, job: Job) -> tuple[Job, Result]:
        deadline = time.monotonic() + job.budget_s
        if job.stream:
            levels = len(level_sizes(job.content.size, job.settings.scales, smallest_side(job.settings)))
            self._send(idx, start_message(job.content.size, job.settings.iterations * levels, levels,
                                          job.budget_s, job.settings.seed))
        last_sent = [time.monotonic()]

        def on_progress(progress: Progress) -> None:
            level_end = progress.iteration % job.settings.iterations == 0
            due = time.monotonic() - last_sent[0] >= self.limits.stream_interval_s
            if job.stream and (progress.iteration == 1 or level_end or due):
                preview = None
                if job.preview:
                    preview = preview_image(to_image(progress.image), self.limits.preview_side)
                self._send(idx, progress_message(progress, preview))
                last_sent[0] = time.monotonic()

        with torch.inference_mode(False), torch.enable_grad():  # optimizing pixels needs autograd
            result = stylize(job.content, job.styles, job.settings, self.features, self.device,
                             on_progress=on_progress, deadline=deadline)
        log.info("gatys: %s iterations in %.1fs, stopped: %s", result.iterations_done, result.elapsed,
                 result.stop_reason)
        self._record(result)
        return job, result

    def _record(self, result: Result) -> None:
        """Prometheus (auto-detected model metrics): iterations run and seconds spent."""
        metrics = getattr(self.context, "metrics", None)
        if metrics is not None:
            metrics.add_counter("GatysIterations", result.iterations_done, None)
            metrics.add_time("GatysOptimizeTime", result.elapsed * 1000, None, "ms")

    def _send(self, idx: int, line: str) -> None:
        """One streamed NDJSON line; TorchServe sends it as an HTTP chunk right away."""
        self.context.set_response_content_type(idx, NDJSON)
        request_id = {idx: self.context.request_ids[idx]}
        send_intermediate_predict_response({idx: line}, request_id, "Intermediate Prediction success", 200,
                                           self.context)


def _headers(context, idx: int) -> dict[str, str]:
    """Request headers by lower-case name (TorchServe keeps the client's spelling)."""
    properties = context.request_processor[idx].get_request_properties()
    return {key.lower(): value for key, value in properties.items() if isinstance(value, str)}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
