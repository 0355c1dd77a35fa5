"""Serving policy for the ``gatys`` model: limits, request parameters, and the streamed messages.

The service (``optimize.service``) applies it; kept apart so the limits and the wire format
are testable without a server and read in one place.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from PIL import Image

from core.codec import encode, fit_max_side
from core.errors import Unavailable
from core.request import Param
from core.settings import HANDLER_KEYS, RESPONSE_TIMEOUT_S, handler_settings, settings_dataclass, thread_count
from lossnet import ARCHITECTURES, AUTO, PRECISIONS
from optimize.transfer import Plan, Progress, TransferResult


class LossNetworkUnavailable(Unavailable):
    """The server lacks the requested loss network's ImageNet weights, so the request cannot be served.

    Answered with **501 Not Implemented**, not 503 and not a 4xx: the fault is the server's
    (a 4xx would tell the client to change its request, which cannot help); 503 means
    "temporarily overloaded, retry" to clients and proxies, and is what TorchServe itself
    returns when a worker crashes, so monitoring could not tell the two apart; 424 (Failed
    Dependency) is a WebDAV code about a failed *earlier request*. 501 says precisely "this
    server cannot perform this function" until an operator supplies the weights, and the
    message says how.
    """


@settings_dataclass(HANDLER_KEYS["gatys"])
class ServingLimits:
    """What one request may ask for; read from the ``handler:`` key of the model config.
    Its fields are the ``handler`` keys declared, with their meanings, types and defaults, in
    ``core.settings`` (``HANDLER_KEYS["gatys"]``): ``max_iterations``, ``max_side``,
    ``time_budget_s``, ``intra_op_threads`` and the rest.

    ``time_budget_s`` is how long optimization may run. It is capped at the model's
    ``responseTimeout`` minus ``response_margin_s`` (decoding, target features, encoding),
    because a request that outlives the timeout gets its worker killed and the client
    nothing; stopping early instead returns the best image so far. Style images have their
    own pixel limit (``max_style_input_pixels``): they are resized for the optimizer while
    decoding, so a large painting costs memory once, not per iteration, and ``max_side`` (the
    output's size) does not apply to them. ``intra_op_threads`` 0 gives one request on an
    idle server the whole machine (admission control keeps the fast styles beside it in time).
    """

    @classmethod
    def from_model_config(cls, config: dict | None) -> ServingLimits:
        """The limits of a model config (``handler:`` checked by ``core.settings``: an unknown
        key or a value of the wrong type is an error naming it, never a silent default)."""
        section = handler_settings(config, "gatys")
        limits = cls(**section)
        timeout = float((config or {}).get("responseTimeout", RESPONSE_TIMEOUT_S))
        budget = min(limits.time_budget_s, timeout - limits.response_margin_s)
        if budget <= 0:
            raise ValueError(
                f"responseTimeout {timeout}s leaves no time to optimize after the "
                f"{limits.response_margin_s}s response margin; raise responseTimeout"
            )
        return cls(**{**section, "time_budget_s": budget})

    def cpu_threads(self) -> int:
        return thread_count(self.intra_op_threads)

    def params(self) -> dict[str, Param]:
        """The request parameters with this server's bounds."""
        huge = 1e12  # weights are scale factors; a bound only rejects nonsense
        return {
            "iterations": Param(int, self.default_iterations, 1, self.max_iterations,
                                help="iterations per resolution level"),
            "max_side": Param(int, self.default_max_side, 32, self.max_side, help="output's longer side"),
            "optimizer": Param(str, "lbfgs", choices=("lbfgs", "adam")),
            "seed": Param(int, None, 0, 2**31 - 1),
            "content_weight": Param(float, 1.0, 0, huge),
            "style_weight": Param(float, 1e6, 0, huge),
            "tv_weight": Param(float, 10.0, 0, huge),
            "init": Param(str, "content", choices=("content", "noise")),
            "loss_network": Param(str, AUTO, choices=(AUTO, *sorted(ARCHITECTURES, reverse=True)),
                                  help="VGG the losses are measured with; auto: VGG19 if present, else VGG16"),
            "precision": Param(str, AUTO, choices=(AUTO, *PRECISIONS),
                               help="loss network arithmetic; auto: this machine's measured choice"),
            "preserve_colors": Param(bool, False, help="keep the photo's colours (as on the fast styles)"),
            "original_colors": Param(bool, False, help="alias of preserve_colors"),
            "style_scale": Param(float, 1.0, 0.05, self.max_style_scale),
            "scales": Param(int, 1, 1, self.max_scales, help="coarse-to-fine levels"),
            "style_weights": Param(list, None, help="blend weights, one per style"),
            "stream": Param(bool, False, help="newline-delimited JSON progress, then the image"),
            "preview": Param(bool, False, help="low-res previews in streamed progress"),
            "max_seconds": Param(float, self.time_budget_s, 1, self.time_budget_s,
                                 help="stop early and return the best image so far"),
            "format": Param(str, None),
        }


def _line(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":")) + "\n"


def start_message(plan: Plan, budget: float, loss_network: str, precision: str) -> str:
    return _line({"type": "start", "size": list(plan.size), "iterations": plan.iterations,
                  "levels": len(plan.levels), "budget_s": round(budget, 1), "seed": plan.seed,
                  "loss_network": loss_network, "precision": precision})


def progress_message(progress: Progress, preview: Image.Image | None) -> str:
    message = {
        "type": "progress",
        "iteration": progress.iteration,
        "iterations": progress.iterations,
        "level": progress.level,
        "levels": progress.levels,
        "size": list(progress.size),
        "elapsed_s": round(progress.elapsed, 2),
        "losses": {name: float(f"{value:.6g}") for name, value in progress.losses.items()},
    }
    if preview is not None:
        message["preview"] = base64.b64encode(encode(preview, "jpeg", quality=75)).decode("ascii")
        message["preview_format"] = "jpeg"
    return _line(message)


def result_message(summary: dict[str, Any], data: bytes, fmt: str, media_type: str) -> str:
    """The last streamed line: ``summary`` (``result_summary`` and what painted it) and the image."""
    return _line({"type": "result", **summary, "format": fmt, "media_type": media_type,
                  "image": base64.b64encode(data).decode("ascii")})


def result_summary(result: TransferResult) -> dict[str, Any]:
    """What a client needs to judge the image: how far it got, why it stopped, how to rerun."""
    return {
        "iterations_done": result.iterations_done,
        "stop_reason": result.stop_reason,
        "seed": result.seed,
        "elapsed_s": round(result.elapsed, 2),
        "size": list(result.image.size),
        "losses": {name: float(f"{value:.6g}") for name, value in result.losses.items()},
    }


def preview_image(image: Image.Image, side: int) -> Image.Image:
    return fit_max_side(image, side)
