"""Gatys et al. (2015) style transfer: optimize the pixels of an image against VGG losses.

Read top to bottom: ``TransferSettings`` (every knob, validated in one place), ``stylize``
(resolution levels, targets, init, colour preservation) and ``_optimize`` (one level's
L-BFGS or Adam loop with a time budget). The service (``optimize.service``), the CLI and the
benchmark all call ``stylize``; they differ only in how they show progress.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core import color
from core.codec import fit_max_side
from lossnet import ARCHITECTURES, FP32, VGG, LossNetwork, Precision
from optimize.losses import Objective

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "image")
#: Coarse levels stop halving at this long side.
MIN_LEVEL_SIDE = 32
#: Gatys et al.'s layers, per loss network: content relu4_2, style relu1_1..relu5_1 (the
#: same names exist in VGG16, whose blocks are one conv shorter).
DEFAULT_LAYERS = {
    "vgg19": (("relu4_2",), ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")),
    "vgg16": (("relu4_2",), ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")),
}


@dataclass
class TransferSettings:
    """Every parameter of one run. Defaults are the usual Gatys setup: VGG19, content
    relu4_2, style relu1_1..relu5_1, L-BFGS from the content image."""

    iterations: int = 300  # per resolution level
    max_side: int = 512  # longer side of the output; never upscales the content
    optimizer: str = "lbfgs"
    learning_rate: float | None = None  # None: 1.0 for L-BFGS, 0.02 for Adam (pixels in [0, 1])
    seed: int | None = None  # None: a fresh seed, reported in the result
    loss_network: str = "vgg19"  # vgg19 | vgg16
    content_weight: float = 1.0
    style_weight: float = 1e6
    tv_weight: float = 10.0
    content_layers: tuple[str, ...] | None = None  # None: DEFAULT_LAYERS of the loss network
    style_layers: tuple[str, ...] | None = None
    style_layer_weights: tuple[float, ...] | None = None  # None: 1.0 each
    style_weights: tuple[float, ...] | None = None  # blend of several styles; None: equal
    style_scale: float = 1.0  # style image's longer side relative to the output's
    init: str = "content"  # content | noise | image (then pass init_image)
    preserve_colors: bool = False  # keep the content's colours (luminance transfer)
    scales: int = 1  # coarse-to-fine levels, each half the size of the next
    history_size: int = 20  # L-BFGS memory; torch's default (100) costs 600 MB at 512 px

    def __post_init__(self):
        content, style = DEFAULT_LAYERS.get(self.loss_network, (None, None))
        self.content_layers = tuple(self.content_layers) if self.content_layers is not None else content
        self.style_layers = tuple(self.style_layers) if self.style_layers is not None else style

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> TransferSettings:
        """Settings from any mapping keyed by field name (request parameters, CLI arguments):
        other keys are ignored, ``None`` keeps the default, lists become tuples."""
        names = {f.name for f in fields(cls)}
        chosen = {key: tuple(value) if isinstance(value, list) else value
                  for key, value in values.items() if key in names and value is not None}
        return cls(**chosen)

    def check(self, output: tuple[int, int], styles: list[Image.Image]) -> None:
        """Raises ``ValueError`` naming the parameter, so callers can answer with a 4xx: every
        setting, then whether the output and each (resized) style image reach the deepest layer."""
        if self.loss_network not in ARCHITECTURES:
            raise ValueError(f"loss_network must be one of {', '.join(ARCHITECTURES)}, got {self.loss_network!r}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if self.max_side < MIN_LEVEL_SIDE:
            raise ValueError(f"max_side must be at least {MIN_LEVEL_SIDE}, got {self.max_side}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        for name in ("content_weight", "style_weight", "tv_weight", "style_scale"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.style_scale <= 0:
            raise ValueError("style_scale must be > 0")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.scales < 1:
            raise ValueError(f"scales must be at least 1, got {self.scales}")
        if not styles:
            raise ValueError("at least one style image is needed")
        arch = ARCHITECTURES[self.loss_network]
        unknown = arch.unknown(self.content_layers + self.style_layers)
        if unknown:
            raise ValueError(f"unknown {arch.name} layer(s) {', '.join(unknown)}; known: {', '.join(arch.layer_names)}")
        if not self.style_layers:
            raise ValueError("style_layers must name at least one layer")
        _check_weights("style_layer_weights", self.style_layer_weights, len(self.style_layers))
        _check_weights("style_weights", self.style_weights, len(styles))
        _check_sizes(output, styles, self)

    def smallest_side(self) -> int:
        """The shortest image side the loss network can take down to the deepest layer used."""
        return ARCHITECTURES[self.loss_network].smallest_side(self.content_layers + self.style_layers)

    def style_side(self, output: tuple[int, int]) -> int:
        """The longer side every style image is resized to for an output of this size."""
        return max(1, round(max(output) * self.style_scale))

    def replace(self, **changes) -> TransferSettings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return TransferSettings(**{**values, **changes})


def _check_weights(name: str, weights: tuple[float, ...] | None, count: int) -> None:
    if weights is None:
        return
    if len(weights) != count:
        raise ValueError(f"{name} needs {count} value(s), one per item, got {len(weights)}")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{name} must be finite, >= 0 and not all zero, got {list(weights)}")


def _check_sizes(output: tuple[int, int], styles: list[Image.Image], settings: TransferSettings) -> None:
    need = settings.smallest_side()
    if min(output) < need:
        raise ValueError(f"content image is {output[0]}x{output[1]} after max_side; its shorter side must be "
                         f"at least {need} px for layer {settings.style_layers[-1]}")
    for number, style in enumerate(styles, start=1):
        if min(resize_style(style, settings.style_side(output)).size) < need:
            raise ValueError(f"style image {number} ({style.width}x{style.height}) becomes too small at "
                             f"style_scale {settings.style_scale}: its shorter side must be at least "
                             f"{need} px")


@dataclass(frozen=True)
class Plan:
    """What a run will do, reported once before the first iteration."""

    size: tuple[int, int]  # output width, height
    levels: list[tuple[int, int]]  # coarse-to-fine sizes, the last one ``size``
    iterations: int  # planned over all levels
    seed: int


@dataclass
class Progress:
    """One iteration's report. ``losses`` are the weighted terms and their total, measured at
    the start of the iteration; ``image`` is the current estimate (detached, [1, 3, h, w])."""

    iteration: int  # counted over all levels, from 1
    iterations: int  # planned over all levels
    level: int  # from 1 (coarsest) to levels
    levels: int
    size: tuple[int, int]  # width, height of this level
    losses: dict[str, float]
    elapsed: float
    image: torch.Tensor = field(repr=False)


@dataclass
class TransferResult:
    image: Image.Image
    losses: dict[str, float]  # of the returned image, at the output size
    history: list[dict]  # one row per iteration: level, iteration, elapsed, losses
    iterations_done: int
    stop_reason: str  # completed | time_budget | converged | diverged
    seed: int
    elapsed: float


def level_sizes(size: tuple[int, int], scales: int, smallest: int = 16) -> list[tuple[int, int]]:
    """Coarse-to-fine sizes ending at ``size``; halves per level, never below MIN_LEVEL_SIDE
    on the longer side nor ``smallest`` on the shorter."""
    sizes = [size]
    for _ in range(scales - 1):
        width, height = sizes[0]
        if max(width, height) // 2 < MIN_LEVEL_SIDE or min(width, height) // 2 < smallest:
            break
        sizes.insert(0, (max(1, round(width / 2)), max(1, round(height / 2))))
    return sizes


def to_tensor(image: Image.Image, device: torch.device | str) -> torch.Tensor:
    """PIL RGB -> [1, 3, H, W] float in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).unsqueeze(0).to(device)


def to_image(tensor: torch.Tensor) -> Image.Image:
    array = tensor.detach().squeeze(0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def resize_style(style: Image.Image, long_side: int) -> Image.Image:
    """Scales a style image so its longer side is ``long_side`` (up or down): the style's
    brush strokes keep the same size relative to the output whatever the upload's size."""
    scale = long_side / max(style.size)
    size = (max(1, round(style.width * scale)), max(1, round(style.height * scale)))
    return style if size == style.size else style.resize(size, Image.Resampling.LANCZOS)


def stylize(
    content: Image.Image,
    styles: list[Image.Image],
    settings: TransferSettings,
    vgg: VGG,
    device: torch.device | str = "cpu",
    init_image: Image.Image | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    deadline: float | None = None,
    on_start: Callable[[Plan], None] | None = None,
    precision: Precision = FP32,
) -> TransferResult:
    """Runs the optimization and returns the best image found.

    ``vgg`` is the loss network ``settings.loss_network`` names (``lossnet.load_vgg``);
    ``precision`` what its convolutions run in (``optimize.precision.choose``).
    ``on_start`` hears the plan (levels, iterations, seed) once, before the first iteration.
    ``deadline`` is a ``time.monotonic()`` instant: when the next iteration would pass it, the
    run stops and returns the best image so far, upsampled to the output size if it stopped
    early on a coarse level.
    """
    content = fit_max_side(content, settings.max_side)
    settings.check(content.size, styles)
    if vgg.arch.name != settings.loss_network:
        raise ValueError(f"settings ask for loss network {settings.loss_network}, given {vgg.arch.name}")
    if settings.init == "image" and init_image is None:
        raise ValueError("init 'image' needs an init image")
    device = torch.device(device)
    start = time.monotonic()
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
    generator = torch.Generator().manual_seed(seed)

    sizes = level_sizes(content.size, settings.scales, settings.smallest_side())
    net = LossNetwork(vgg, settings.content_layers + settings.style_layers, precision).to(device)
    blend = list(settings.style_weights or (1.0,) * len(styles))
    planned = settings.iterations * len(sizes)
    if on_start is not None:
        on_start(Plan(content.size, sizes, planned, seed))
    history: list[dict] = []
    done, reason, estimate, cut_short = 0, "completed", None, False
    image = None

    for level, size in enumerate(sizes, start=1):
        level_content = content if size == content.size else content.resize(size, Image.Resampling.LANCZOS)
        objective = _objective(net, level_content, styles, blend, settings, device)
        if image is None:
            image = _initial(settings.init, level_content, init_image, generator, device)
        else:  # coarse-to-fine: the previous level's result, upsampled, is the next start
            image = F.interpolate(image, size=(size[1], size[0]), mode="bilinear", align_corners=False)

        # Share the remaining time between levels by pixel count, so the finest level (which
        # decides the output) keeps most of it.
        level_deadline = deadline
        if deadline is not None:
            pixels = [w * h for w, h in sizes[level - 1:]]
            level_deadline = time.monotonic() + (deadline - time.monotonic()) * pixels[0] / sum(pixels)
        if estimate is not None:  # seconds per iteration, scaled from the previous level
            estimate *= size[0] * size[1] / (sizes[level - 2][0] * sizes[level - 2][1])

        def report(step: int, losses: dict[str, float], current: torch.Tensor, level=level, size=size,
                   before=done):
            history.append({"level": level, "iteration": before + step, "elapsed": time.monotonic() - start,
                            **losses})
            if on_progress is not None:
                on_progress(Progress(before + step, planned, level, len(sizes), size, losses,
                                     time.monotonic() - start, current))

        image, steps, reason, estimate = _optimize(image, objective, settings, level_deadline, estimate,
                                                   report)
        done += steps
        # A level that used up its share of the time hands over to the next (which stops at
        # once if nothing is left); only divergence ends the run here.
        cut_short = cut_short or reason == "time_budget"
        if reason == "diverged":
            break

    if image.shape[-2:] != (content.height, content.width):
        image = F.interpolate(image, size=(content.height, content.width), mode="bilinear",
                              align_corners=False)
    output = to_image(image)
    if settings.preserve_colors:
        output = color.preserve_colors(output, content)
    with torch.no_grad():
        # Report the losses of what is returned (after colour transfer and any upsampling).
        if size != content.size:  # stopped early on a coarse level
            objective = _objective(net, content, styles, blend, settings, device)
        _, losses = objective(to_tensor(output, device))
    if cut_short and reason != "diverged":
        reason = "time_budget"
    return TransferResult(output, losses, history, done, reason, seed, time.monotonic() - start)


def _objective(
    net: LossNetwork,
    content: Image.Image,
    styles: list[Image.Image],
    blend: list[float],
    settings: TransferSettings,
    device: torch.device,
) -> Objective:
    """The objective at ``content``'s size, with the styles resized relative to it."""
    style_side = settings.style_side(content.size)
    layer_weights = settings.style_layer_weights or (1.0,) * len(settings.style_layers)
    return Objective(
        net,
        to_tensor(content, device),
        [to_tensor(resize_style(style, style_side), device) for style in styles],
        blend,
        {name: 1.0 for name in settings.content_layers},
        dict(zip(settings.style_layers, layer_weights, strict=True)),
        settings.content_weight,
        settings.style_weight,
        settings.tv_weight,
    )


def _initial(
    init: str,
    content: Image.Image,
    init_image: Image.Image | None,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    if init == "content":
        return to_tensor(content, device)
    if init == "image":
        return to_tensor(init_image.convert("RGB").resize(content.size, Image.Resampling.LANCZOS), device)
    # Gatys' white noise, uniform over the pixel range; the seed makes it reproducible.
    return torch.rand((1, 3, content.height, content.width), generator=generator).to(device)


def _optimize(
    start: torch.Tensor,
    objective: Objective,
    settings: TransferSettings,
    deadline: float | None,
    estimate: float | None,
    report: Callable[[int, dict[str, float], torch.Tensor], None],
) -> tuple[torch.Tensor, int, str, float | None]:
    """One level's loop. Returns the best image seen, iterations run, why it stopped, and the
    measured seconds per iteration (to budget the next level).

    L-BFGS runs with ``max_iter=1`` per ``step()``: its history persists between calls, so
    this is the same algorithm as one long ``step()``, but with a place to report progress and
    check the clock after every iteration. Pixels are clamped to [0, 1] after each step.
    """
    image = start.detach().clone().requires_grad_(True)
    if settings.optimizer == "lbfgs":
        optimizer = torch.optim.LBFGS(
            [image], lr=settings.learning_rate or 1.0, max_iter=1, history_size=settings.history_size
        )
    else:
        optimizer = torch.optim.Adam([image], lr=settings.learning_rate or 0.02)
    best, best_loss = start.detach().clone(), math.inf
    measured: dict[str, float] = {}

    def closure() -> torch.Tensor:
        nonlocal best, best_loss
        optimizer.zero_grad()
        total, losses = objective(image)
        total.backward()
        measured.clear()
        measured.update(losses)
        if losses["total"] < best_loss:
            best, best_loss = image.detach().clone(), losses["total"]
        return total

    steps, reason = 0, "completed"
    previous = math.inf
    while steps < settings.iterations:
        if deadline is not None and estimate is not None and time.monotonic() + estimate > deadline:
            reason = "time_budget"
            break
        began = time.monotonic()
        optimizer.step(closure)
        with torch.no_grad():
            image.clamp_(0, 1)
        steps += 1
        took = time.monotonic() - began
        estimate = took if estimate is None else max(took, 0.5 * estimate + 0.5 * took)
        report(steps, dict(measured), image.detach())
        if not math.isfinite(measured["total"]):
            reason = "diverged"
            break
        if measured["total"] == previous:  # L-BFGS stops moving once its gradient vanishes
            reason = "converged"
            break
        previous = measured["total"]

    with torch.no_grad():  # the last step's result has not been evaluated yet
        _, losses = objective(image)
    if losses["total"] < best_loss:
        best = image.detach().clone()
    return best, steps, reason, estimate
