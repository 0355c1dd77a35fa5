"""TorchServe handler for ``gatys``: iterative (Gatys et al.) style transfer, one request at a time.

Request: multipart fields ``content``, ``style`` (more: ``style_2``, ``style_3``, ...) and the
parameters as form fields (or ``X-<Name>`` headers), or JSON ``{"content": b64, "styles":
[b64, ...], ...params}``. Response: the image (PNG unless ``format``/Accept say otherwise)
with ``X-Gatys-*`` headers (iterations done, stop reason, seed, seconds, loss network,
precision); with ``stream=true``, newline-delimited JSON progress messages whose last line
carries the image as base64. A loss network without weights here answers 501 saying how to
supply them. Metrics ``GatysIterations`` and ``GatysOptimizeTime`` besides every family's.

The work is ``optimize.service.GatysService``'s; the four steps are ``core.handler``'s. This
handler runs one optimization at a time, streaming each one's progress to its own client.
"""

from __future__ import annotations

from functools import partial

from core.errors import Overloaded, Refusal
from core.handler import ServiceHandler
from core.torchserve import Worker
from optimize.service import GatysService


class GatysHandler(ServiceHandler):
    """TorchServe loads the one class of this module as the handler."""

    counted = {"iterations_done": "GatysIterations"}
    timed = {"elapsed_s": "GatysOptimizeTime"}

    def open_service(self, worker: Worker) -> GatysService:
        """Loads the loss networks whose weights are present; the others answer 501."""
        return GatysService.open(worker.name, worker.config, worker.gpu_id)

    def run(self, jobs: list) -> list:
        """Each job on its own, under its own admission, its progress streamed to its client."""
        outcomes = []
        for idx, job in enumerate(jobs):
            try:
                outcomes.append(job if isinstance(job, Refusal) else self.service.run(job, partial(self.send, idx)))
            except Overloaded as error:  # answered 503 with Retry-After
                outcomes.append(error)
        return outcomes
