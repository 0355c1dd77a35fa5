"""TorchServe handler for ``gatys``: iterative (Gatys et al.) style transfer, one request at a time.

Request: multipart fields ``content``, ``style`` (more: ``style_2``, ``style_3``, ...) and the
parameters as form fields, or JSON ``{"content": b64, "styles": [b64, ...], ...params}``.
Response: the image (PNG unless ``format``/Accept say otherwise); with ``stream=true``,
newline-delimited JSON progress messages whose last line carries the image as base64.

The work is ``optimize.service.GatysService``'s; this module is TorchServe's four steps
around it, per-request headers, streamed chunks, metrics, and a last line of defence.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from http import HTTPStatus

import torch
from ts.handler_utils.utils import send_intermediate_predict_response
from ts.torch_handler.base_handler import BaseHandler

from core.admission import Admission
from core.errors import InputError, Overloaded
from core.torchserve import header
from optimize.service import NDJSON, GatysJob, GatysService, Reply, error_reply, fault_reply
from optimize.serving import LossNetworkUnavailable, ServingLimits

# TorchServe loads the one class this module defines as the handler.
log = logging.getLogger(__name__)


class GatysHandler(BaseHandler):
    def initialize(self, context) -> None:
        """Reads limits, picks the device, loads the loss networks whose weights are present."""
        self.context = context
        self.manifest = context.manifest
        limits = ServingLimits.from_model_config(getattr(context, "model_yaml_config", None))
        gpu = context.system_properties.get("gpu_id")
        device = torch.device(f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu")
        if device.type == "cpu":
            torch.set_num_threads(limits.cpu_threads())
        self.service = GatysService(limits, device)
        # Server-wide bound on work in flight (core.admission): an optimization holds its cores.
        config = getattr(context, "model_yaml_config", None)
        self.admission = Admission.for_worker(context.manifest["model"]["modelName"], config, limits.cpu_threads())
        self.initialized = True

    def describe_handle(self) -> dict:
        """``GET /models/gatys?customized=true``: the loss networks (available or why not), the
        default one and the precision each runs in here."""
        return self.service.describe()

    def preprocess(self, data: list[dict]) -> list[GatysJob | InputError | LossNetworkUnavailable]:
        """Validates each request and decodes its images; errors are kept per request."""
        jobs = []
        for idx, row in enumerate(data):
            try:
                parsed = self.service.parse(row, header(self.context, idx, "content-type"))
                jobs.append(self.service.prepare(parsed, header(self.context, idx, "accept")))
            except (InputError, LossNetworkUnavailable) as error:
                jobs.append(error)
        return jobs

    def inference(self, jobs: list, *args, **kwargs) -> list:
        """Runs the optimization for each valid job, streaming progress when asked."""
        outputs = []
        for idx, job in enumerate(jobs):
            if not isinstance(job, GatysJob):
                outputs.append(job)
                continue
            try:
                with self.admission.gatys(job.content.width * job.content.height) as waited:
                    # The wait counts against the response timeout the server's budget is cut from.
                    job = replace(job, budget_s=min(job.budget_s, self.service.limits.time_budget_s - waited))
                    result = self.service.run(job, lambda line, idx=idx: self._send(idx, line))
            except Overloaded as error:  # answered 503 with Retry-After
                outputs.append(error)
                continue
            self._record(result.iterations_done, result.elapsed)
            outputs.append(self.service.reply(job, result))
        return outputs

    def postprocess(self, outputs: list) -> list[bytes | str]:
        """Sets each reply's status, media type and headers; errors become JSON bodies."""
        return [self._answer(idx, out if isinstance(out, Reply) else error_reply(out))
                for idx, out in enumerate(outputs)]

    def handle(self, data, context):
        """BaseHandler.handle with a last line of defence: a fault we did not foresee
        answers 500 with JSON for this batch instead of killing the worker."""
        try:
            return super().handle(data, context)
        except Exception as error:  # noqa: BLE001 - reported, not swallowed
            log.exception("gatys: unexpected failure")
            return [self._answer(idx, fault_reply(error)) for idx in range(len(data))]

    # --- helpers -----------------------------------------------------------------------------

    def _answer(self, idx: int, reply: Reply) -> bytes | str:
        if reply.status != 200:
            self.context.set_response_status(reply.status, _phrase(reply.status), idx)
        self.context.set_response_content_type(idx, reply.media_type)
        for name, value in reply.headers.items():
            self.context.set_response_header(idx, name, value)
        return reply.body

    def _record(self, iterations: int, seconds: float) -> None:
        """Prometheus (auto-detected model metrics): iterations run and seconds spent."""
        metrics = getattr(self.context, "metrics", None)
        if metrics is not None:
            metrics.add_counter("GatysIterations", iterations, None)
            metrics.add_time("GatysOptimizeTime", seconds * 1000, None, "ms")

    def _send(self, idx: int, line: str) -> None:
        """One streamed NDJSON line; TorchServe sends it as an HTTP chunk right away."""
        self.context.set_response_content_type(idx, NDJSON)
        request_id = {idx: self.context.request_ids[idx]}
        send_intermediate_predict_response({idx: line}, request_id, "Intermediate Prediction success", 200,
                                           self.context)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
