"""The one TorchServe handler every model family's handler is: a service driven through
TorchServe's four steps.

``ServiceHandler`` is a template, as TorchServe's ``BaseHandler`` is: ``initialize`` opens the
service (the subclass says which, in ``open_service``), ``preprocess`` reads each request of
the batch (``core.torchserve``) and prepares its job, ``inference`` runs the prepared jobs
(``run``: by default the batchable ones in one call of the service, and each job that runs
alone, a video, on its own, under its own admission, its progress streamed to its client by
``send``), ``postprocess`` answers each one (the reply's summary as headers; a refusal as its
status and JSON body), and ``handle`` turns a fault nobody foresaw into a 500 for the batch
instead of a dead worker.

Every family gets the same features here: requests as multipart fields, JSON, a raw body,
``X-<Name>`` headers or KServe v2 inputs (TorchServe's ``kservev2`` envelope); admission
control (in the service; ``Overloaded`` is a 503 with ``Retry-After``); and the metrics,
recorded once: ``StyleInferenceTime`` (per request, with a ``Runtime`` dimension naming the
engine), ``StyleInputMegapixels``, and the counters and timers a family declares from its
replies' summaries.
"""

from __future__ import annotations

import base64
import itertools
import logging
import time
from functools import partial
from typing import Any, ClassVar, Protocol

from ts.handler_utils.utils import send_intermediate_predict_response
from ts.metrics.dimension import Dimension
from ts.torch_handler.base_handler import BaseHandler

from core.errors import InputError, Overloaded, Refusal, Unavailable
from core.reply import NDJSON, Reply, error_reply, fault_reply
from core.request import Request, RequestForm
from core.torchserve import Worker, answer, from_kserve_v2, is_kserve_v2, read_request

logger = logging.getLogger(__name__)


class Service(Protocol):
    """What a handler drives: ``core.fast_service.FastStyleService``, ``optimize.service.GatysService``.
    Each also runs its jobs (``ServiceHandler.run`` says how): a batch in ``run(jobs)``, a job
    whose ``alone`` is true in ``run_alone(job, send)``."""

    form: RequestForm
    runtime: str

    def describe(self) -> dict[str, Any]: ...

    def prepare(self, request: Request) -> Any: ...

    def reply(self, job: Any, result: Any) -> Reply: ...


class ServiceHandler(BaseHandler):
    """The four steps around a service; a family's handler names its service and, if it
    runs jobs otherwise than all in one call, overrides ``run``."""

    #: Summary entries counted as metrics: summary name -> counter name.
    counted: ClassVar[dict[str, str]] = {}
    #: Summary entries in seconds recorded as times in ms: summary name -> metric name.
    timed: ClassVar[dict[str, str]] = {}

    def open_service(self, worker: Worker) -> Service:
        raise NotImplementedError

    def initialize(self, context) -> None:
        """Opens the service once per worker; a bad setting stops the worker here, named."""
        self.context = context
        self.manifest = context.manifest
        self.service = self.open_service(Worker.of(context))
        self.kserve_v2 = False
        self.initialized = True

    def describe_handle(self) -> dict:
        """``GET /models/<name>?customized=true``: what the service runs on."""
        return self.service.describe()

    def preprocess(self, data: list) -> list:
        """Each request's job, or the refusal that answers it (the others go on)."""
        # Behind KServe (service_envelope=kservev2) one request arrives as its v2 inputs.
        self.kserve_v2 = is_kserve_v2(data)
        rows = [from_kserve_v2(data)] if self.kserve_v2 else data
        jobs = []
        for idx, row in enumerate(rows):
            try:
                jobs.append(self.service.prepare(read_request(self.context, idx, row, self.service.form)))
            except (InputError, Unavailable) as error:
                jobs.append(error)
        return jobs

    def inference(self, jobs: list) -> list:
        """Each job with its outcome (a result or a refusal); the time it took is recorded."""
        started = time.perf_counter()
        outcomes = self.run(jobs)
        done = [job for job, outcome in zip(jobs, outcomes, strict=True) if not isinstance(outcome, Refusal)]
        self._record_inference(started, done)
        return list(zip(jobs, outcomes, strict=True))

    def run(self, jobs: list) -> list:
        """The outcome of each job, refusals passed through: every ready batchable job in one
        call of the service's ``run(jobs) -> results`` (it batches what it can), all refused
        together when overloaded; each job that runs alone by ``run_alone``."""
        ready = [job for job in jobs if not isinstance(job, Refusal) and not job.alone]
        try:
            results = iter(self.service.run(ready) if ready else [])
        except Overloaded as error:  # answered 503 with Retry-After
            results = itertools.repeat(error)
        outcomes = []
        for idx, job in enumerate(jobs):
            if isinstance(job, Refusal):
                outcomes.append(job)
            else:
                outcomes.append(self.run_alone(idx, job) if job.alone else next(results))
        return outcomes

    def run_alone(self, idx: int, job: Any) -> Any:
        """A job that holds the worker for long (a video): on its own, under its own
        admission, its progress streamed to its own client; a refusal met on the way (no room,
        a clip that turns out unreadable) is its answer."""
        try:
            return self.service.run_alone(job, partial(self.send, idx))
        except (InputError, Overloaded) as error:
            return error

    def send(self, idx: int, line: str) -> None:
        """One streamed NDJSON line; TorchServe sends it as an HTTP chunk right away."""
        self.context.set_response_content_type(idx, NDJSON)
        request_id = {idx: self.context.request_ids[idx]}
        send_intermediate_predict_response({idx: line}, request_id, "Intermediate Prediction success", 200,
                                           self.context)

    def postprocess(self, outcomes: list) -> list[bytes | str]:
        """Each reply: a result encoded, with its summary as headers; a refusal as JSON."""
        responses = []
        for idx, (job, outcome) in enumerate(outcomes):
            reply = error_reply(outcome) if isinstance(outcome, Refusal) else self.service.reply(job, outcome)
            if reply.status == 200:
                self._record_summary(reply.summary)
            if self.kserve_v2 and isinstance(reply.body, bytes) and reply.status == 200:
                responses.append(base64.b64encode(reply.body).decode("ascii"))  # a v2 BYTES output: base64 text
            else:
                responses.append(answer(self.context, idx, reply))
        return responses

    def handle(self, data, context):
        """BaseHandler.handle with a last line of defence: a fault we did not foresee
        answers 500 with JSON for this batch instead of killing the worker."""
        try:
            return super().handle(data, context)
        except Exception as error:  # noqa: BLE001 - reported, not swallowed
            logger.exception("unexpected failure")
            return [answer(context, idx, fault_reply(error)) for idx in range(len(data))]

    def _record_inference(self, started: float, done: list) -> None:
        metrics = getattr(self.context, "metrics", None)
        if metrics is None or not done:
            return
        per_request_ms = (time.perf_counter() - started) * 1000 / len(done)
        runtime = [Dimension("Runtime", self.service.runtime)]
        metrics.add_time("StyleInferenceTime", per_request_ms, None, "ms", runtime)
        metrics.add_size("StyleInputMegapixels", sum(job.pixels for job in done) / 1e6, None, "MB")

    def _record_summary(self, summary: dict[str, Any]) -> None:
        metrics = getattr(self.context, "metrics", None)
        if metrics is None:
            return
        for name, metric in self.counted.items():
            count = float(summary.get(name) or 0)
            if count:  # a zero adds nothing to a counter
                metrics.add_counter(metric, count, None)
        for name, metric in self.timed.items():
            metrics.add_time(metric, float(summary[name]) * 1000, None, "ms")
