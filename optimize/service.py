"""The Gatys service: one request from a ``core.request.Request`` to its ``Reply``, independent of any server.

``GatysService(limits, device)`` loads every loss network whose weights it finds, once,
and chooses each one's precision on this machine (``optimize.precision``: measured once per
machine, then cached). A request's ``loss_network`` (``auto``: VGG19 where its weights are
present, else VGG16) and ``precision`` (``auto``: the machine's choice) are resolved here, and
every reply names both. Per request: ``prepare`` (parameters checked against ``form``, images
decoded with their own limits, settings built and checked -> a ``GatysJob``; raises
``InputError`` or ``LossNetworkUnavailable``), ``run`` (the optimization under the time
budget, once admitted by ``core.admission`` when the service has an admission door;
streamed progress handed to ``send`` as NDJSON lines) and ``reply`` (the image or the final
NDJSON line, with its media type and a summary: ``X-Gatys-*`` headers on TorchServe, response
parameters on KServe). ``GatysService.open`` is how both servers start one: the TorchServe
handler (``handlers/gatys.py``) and the KServe predictor drive these three steps alike.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from core.admission import Admission
from core.codec import MEDIA_TYPES, Limits, decode, encode, format_from_accept, parse_format
from core.errors import InputError
from core.reply import NDJSON, Reply
from core.request import MISSING_STYLE, Request, RequestForm
from lossnet import ARCHITECTURES, AUTO, VGG, Precision, PrecisionUnavailable, VGGWeightsMissing, load_vgg, resolve
from lossnet import precision as precisions
from optimize import precision as precision_choice
from optimize.serving import (
    LossNetworkUnavailable,
    ServingLimits,
    preview_image,
    progress_message,
    result_message,
    result_summary,
    start_message,
)
from optimize.transfer import Plan, Progress, TransferResult, TransferSettings, stylize, to_image

log = logging.getLogger(__name__)
#: What a reply's summary says (``X-Gatys-Iterations-Done``, ...), as text: the values its
#: headers carry (a seed may be None, ``elapsed_s`` is a float: no protocol parameter's type).
SUMMARY = ("iterations_done", "stop_reason", "seed", "elapsed_s", "loss_network", "precision")


@dataclass
class GatysJob:
    """One validated request, ready to optimize."""

    content: Image.Image
    styles: list[Image.Image]
    settings: TransferSettings
    precision: Precision
    stream: bool
    preview: bool
    fmt: str
    budget_s: float

    @property
    def pixels(self) -> int:
        return self.content.width * self.content.height


class GatysService:
    """The loaded loss networks, their precisions and the serving limits, shared by every request;
    with ``admission``, each run first reserves its cores and memory server-wide."""

    def __init__(self, limits: ServingLimits, device: torch.device | str = "cpu",
                 choose_precision: Callable[[VGG, torch.device], precision_choice.PrecisionChoice] | None = None,
                 admission: Admission | None = None):
        self.limits = limits
        self.device = torch.device(device)
        self.admission = admission
        self.networks: dict[str, VGG] = {}
        self.missing: dict[str, str] = {}
        self.precisions: dict[str, precision_choice.PrecisionChoice] = {}
        choose_precision = choose_precision or precision_choice.choose
        for name in ARCHITECTURES:
            try:
                self.networks[name] = load_vgg(name).to(self.device)
            except VGGWeightsMissing as error:
                # Not fatal: requests for this network get a 501 saying how to supply the
                # weights, instead of a worker crashing on load; auto picks another.
                self.missing[name] = str(error)
                continue
            self.precisions[name] = choose_precision(self.networks[name], self.device)
            log.info("gatys: loss network %s from %s, precision %s (%s)", self.networks[name].label,
                     self.networks[name].source, self.precisions[name].name, self.precisions[name].reason)
        if not self.networks:
            log.error("gatys: no loss network; every request is answered 501 until weights exist: %s",
                      " | ".join(self.missing.values()))
        self.default_network = resolve(AUTO, self.networks)

    @classmethod
    def open(cls, name: str, model_config: Mapping | None, gpu_id: int | None = None) -> GatysService:
        """Model ``name`` as its model config sets it: on GPU ``gpu_id`` when there is one, else
        on the CPU with the threads the limits give it; admitted server-wide."""
        limits = ServingLimits.from_model_config(model_config)
        device = torch.device(f"cuda:{gpu_id}" if torch.cuda.is_available() and gpu_id is not None else "cpu")
        if device.type == "cpu":
            torch.set_num_threads(limits.cpu_threads())
        # Server-wide bound on work in flight (core.admission): an optimization holds its cores.
        admission = Admission.for_worker(name, model_config, limits.cpu_threads())
        return cls(limits, device, admission=admission)

    @property
    def form(self) -> RequestForm:
        """What a request carries: ``content``, style images, and parameters within this server's limits."""
        return RequestForm("content", self.limits.params(), styles=True)

    @property
    def runtime(self) -> str:
        """``torch/<precision>`` of the default loss network (``torch`` when there is none)."""
        default = self.precisions.get(self.default_network)
        return f"torch/{default.name}" if default else "torch"

    def describe(self) -> dict[str, Any]:
        """What this worker paints with: each loss network (available or why not) and its precision."""
        networks: dict[str, dict[str, Any]] = {}
        for name in ARCHITECTURES:
            if name in self.networks:
                networks[name] = {"available": True, "label": self.networks[name].label,
                                  "precision": self.precisions[name].describe()}
            else:
                networks[name] = {"available": False, "reason": self.missing[name]}
        default = self.networks.get(self.default_network)
        return {"loss_networks": networks, "default_loss_network": self.default_network,
                "default_label": default.label if default else None,
                "precision": self.precisions[self.default_network].name if default else None}

    def prepare(self, request: Request) -> GatysJob:
        """Decodes and checks everything before any optimization starts; raises ``InputError``
        (4xx, naming the problem) or ``LossNetworkUnavailable`` (501)."""
        limits, form = self.limits, self.form
        params = form.parse_params(request.params)
        network = resolve(params["loss_network"], self.networks)
        if network not in self.networks:
            raise LossNetworkUnavailable(self.missing[network])
        precision = self._precision(network, params["precision"])
        if not request.styles:
            raise InputError(MISSING_STYLE)
        if len(request.styles) > limits.max_styles:
            raise InputError(f"{len(request.styles)} style images sent; this server allows at most {limits.max_styles}")
        content = form.photo_of(request, Limits(max_input_pixels=limits.max_input_pixels), params["max_side"])
        settings = TransferSettings.from_values({
            **params,
            "loss_network": network,
            "preserve_colors": params["preserve_colors"] or params["original_colors"],
            "history_size": limits.history_size,
        })
        # Decoded straight to the size the optimizer uses (never upscaled here): the output's
        # max_side does not apply to a style image, its own pixel limit does.
        style_limits = Limits(max_input_pixels=limits.max_style_input_pixels)
        styles = [decode(style, style_limits, settings.style_side(content.size)) for style in request.styles]
        fmt = parse_format(params["format"]) or format_from_accept(request.accept) or "png"
        try:
            settings.check(content.size, styles)
        except ValueError as error:
            raise InputError(str(error)) from None
        return GatysJob(content, styles, settings, precision, params["stream"], params["preview"], fmt,
                        params["max_seconds"])

    def _precision(self, network: str, asked: str) -> Precision:
        """``auto``: this machine's measured choice for the network; else as asked, if the device has it."""
        if asked == AUTO:
            return self.precisions[network].precision
        try:
            return precisions.explicit(asked, self.device)
        except PrecisionUnavailable as error:
            raise InputError(str(error)) from None

    def run(self, job: GatysJob, send: Callable[[str], None] | None = None) -> TransferResult:
        """Optimizes under the job's time budget, once admitted (``Overloaded`` when the
        server has no room). With ``job.stream``, ``send`` gets the start line, then progress
        lines (the first, every level's last, and at most one per ``stream_interval_s`` in
        between), each an NDJSON line."""
        door = self.admission.gatys(job.pixels) if self.admission else contextlib.nullcontext(0.0)
        with door as waited:
            # The wait counts against the response timeout the server's budget is cut from.
            return self._optimize(replace(job, budget_s=min(job.budget_s, self.limits.time_budget_s - waited)), send)

    def _optimize(self, job: GatysJob, send: Callable[[str], None] | None) -> TransferResult:
        deadline = time.monotonic() + job.budget_s
        streaming = job.stream and send is not None
        last_sent = [time.monotonic()]

        vgg = self.networks[job.settings.loss_network]

        def on_start(plan: Plan) -> None:
            if streaming:
                send(start_message(plan, job.budget_s, vgg.label, job.precision.name))

        def on_progress(progress: Progress) -> None:
            level_end = progress.iteration % job.settings.iterations == 0
            due = time.monotonic() - last_sent[0] >= self.limits.stream_interval_s
            if streaming and (progress.iteration == 1 or level_end or due):
                preview = preview_image(to_image(progress.image), self.limits.preview_side) if job.preview else None
                send(progress_message(progress, preview))
                last_sent[0] = time.monotonic()

        with torch.inference_mode(False), torch.enable_grad():  # optimizing pixels needs autograd
            result = stylize(job.content, job.styles, job.settings, vgg, self.device,
                             on_progress=on_progress, deadline=deadline, on_start=on_start,
                             precision=job.precision)
        log.info("gatys: %s iterations in %.1fs on %s (%s), stopped: %s", result.iterations_done, result.elapsed,
                 vgg.label, job.precision.name, result.stop_reason)
        return result

    def reply(self, job: GatysJob, result: TransferResult) -> Reply:
        """The encoded image (or, streamed, the final NDJSON line carrying it) and the summary
        that says how far the run got and what painted it."""
        data = encode(result.image, job.fmt)
        painted_by = {"loss_network": self.networks[job.settings.loss_network].label, "precision": job.precision.name}
        summary = {**result_summary(result), **painted_by}
        told = {name: str(summary[name]) for name in SUMMARY}
        if job.stream:
            return Reply(200, NDJSON, result_message(summary, data, job.fmt, MEDIA_TYPES[job.fmt]), told, "X-Gatys-")
        return Reply(200, MEDIA_TYPES[job.fmt], data, told, "X-Gatys-")
