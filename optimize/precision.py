"""Choosing the loss network's precision on this machine: by measurement, never by assumption.

``auto`` considers the reduced precision the device runs natively (``lossnet.precision``:
bf16 on CPUs with AVX512_BF16 or AMX, bf16/fp16 on a GPU) and keeps it only when both hold:

- it is faster: one forward and backward pass of the loss network at ``TIME_SIDE`` takes at
  most ``SPEEDUP_NEEDED`` of fp32's time (best of ``TIME_ROUNDS`` rounds that alternate the
  two, so other work on a shared machine slows both alike instead of one);
- it paints like fp32: a short Gatys run (``CHECK_SIDE`` px, ``CHECK_ITERATIONS`` L-BFGS
  iterations, the same seed) on a real photo and painting ends within ``TEXTURE_TOLERANCE`` of
  fp32's texture distance and ``COLOUR_TOLERANCE`` of its colour distance to the painting
  (``optimize.measures``: measures the loss network never saw).

Otherwise fp32. The choice is cached in the runtime folder the fast styles use, keyed by the
CPU, its flags, the core count, torch's version, the device and the weights, and measured
under the same machine-wide lock, so one worker measures and a restarted one reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageOps

from core import cpu, photos, runtime_choice
from lossnet import AUTO, VGG, LossNetwork, Precision
from lossnet import precision as precisions
from optimize import measures
from optimize.transfer import DEFAULT_LAYERS, TransferSettings, stylize

log = logging.getLogger(__name__)

TIME_SIDE = 256
TIME_ROUNDS = 3
#: Reduced precision must save at least a tenth of the time: a tie is not worth its rounding.
SPEEDUP_NEEDED = 0.9
CHECK_SIDE = 128
CHECK_ITERATIONS = 12
#: Texture distance is a relative Gram distance (0 = the painting's texture); colour distance
#: is in 0..255 levels, so its tolerance is relative to fp32's own distance.
TEXTURE_TOLERANCE = 0.1
COLOUR_TOLERANCE = 0.1
CACHE_VERSION = 1


@dataclass
class PrecisionChoice:
    """The precision a loss network runs in here, and why."""

    precision: Precision
    reason: str
    measured: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    @property
    def name(self) -> str:
        return self.precision.name

    def describe(self) -> dict:
        return {"precision": self.name, "reason": self.reason, "measured": self.measured, "cached": self.cached}


@dataclass(frozen=True)
class Painting:
    """What the quality check compares: distances of a short run's result to the painting."""

    texture: float
    colour: float


def choose(
    vgg: VGG,
    device: torch.device | str = "cpu",
    asked: str = AUTO,
    timer: Callable[[VGG, Precision], float] | None = None,
    painter: Callable[[VGG, Precision], Painting] | None = None,
    use_cache: bool = True,
) -> PrecisionChoice:
    """The precision for ``vgg`` on ``device``: ``asked`` explicitly (``PrecisionUnavailable``
    where the device lacks it), or under ``auto`` by measurement. ``timer`` and ``painter`` are
    the two measurements (``seconds_per_pass`` and ``paint_check`` unless a test injects fakes)."""
    device = torch.device(device)
    if asked != AUTO:
        return PrecisionChoice(precisions.explicit(asked, device), "asked for")
    candidate = precisions.reduced(device)
    if candidate is None:
        flags = " ".join(cpu.relevant_flags()) or "none"
        return PrecisionChoice(Precision("fp32", device.type), f"no native bf16 here (CPU flags: {flags})")
    timer = timer or (lambda net, precision: seconds_per_pass(net, precision, device))
    painter = painter or (lambda net, precision: paint_check(net, precision, device))
    if not use_cache:
        return _measure(vgg, device, candidate, timer, painter)
    folder, key = runtime_choice.cache_dir(), cache_key(vgg, device)
    with runtime_choice.measuring_lock(folder):
        record = runtime_choice.read_cached(folder, key)
        if record is not None and record.get("precision") in ("fp32", candidate.name):
            name = record["precision"]
            return PrecisionChoice(Precision(name, device.type), record["reason"], record["measured"], cached=True)
        choice = _measure(vgg, device, candidate, timer, painter)
        runtime_choice.write_cached(folder, key, choice.describe())
    return choice


def _measure(vgg: VGG, device: torch.device, candidate: Precision,
             timer: Callable[[VGG, Precision], float], painter: Callable[[VGG, Precision], Painting]
             ) -> PrecisionChoice:
    reference = Precision("fp32", device.type)
    fp32_s = reduced_s = math.inf
    for _ in range(TIME_ROUNDS):
        fp32_s, reduced_s = min(fp32_s, timer(vgg, reference)), min(reduced_s, timer(vgg, candidate))
    measured = {"fp32_s": round(fp32_s, 4), f"{candidate.name}_s": round(reduced_s, 4),
                "speed_ratio": round(reduced_s / fp32_s, 3) if fp32_s > 0 else math.inf}
    if not reduced_s <= SPEEDUP_NEEDED * fp32_s:
        return PrecisionChoice(reference, f"{candidate.name} not faster here", measured)
    exact, fast = painter(vgg, reference), painter(vgg, candidate)
    texture_gap, colour_gap = abs(fast.texture - exact.texture), abs(fast.colour - exact.colour)
    measured.update({"texture_fp32": round(exact.texture, 4), f"texture_{candidate.name}": round(fast.texture, 4),
                     "colour_fp32": round(exact.colour, 3), f"colour_{candidate.name}": round(fast.colour, 3)})
    if texture_gap > TEXTURE_TOLERANCE or colour_gap > COLOUR_TOLERANCE * exact.colour:
        return PrecisionChoice(reference, f"{candidate.name} does not paint like fp32 here", measured)
    log.info("loss network precision: %s (%s x fp32's time, paints like fp32)", candidate.name,
             measured["speed_ratio"])
    return PrecisionChoice(candidate, f"{candidate.name} faster and paints like fp32", measured)


def seconds_per_pass(vgg: VGG, precision: Precision, device: torch.device | str = "cpu",
                     side: int = TIME_SIDE, repeats: int = 1,
                     clock: Callable[[], float] = time.perf_counter) -> float:
    """Best time of one forward and backward pass through Gatys's layers (after a warm-up)."""
    content, style = DEFAULT_LAYERS[vgg.arch.name]
    net = LossNetwork(vgg, content + style, precision).to(device)
    image = torch.rand((1, 3, side, side), generator=torch.Generator().manual_seed(0)).to(device)
    best = math.inf
    for attempt in range(repeats + 1):
        pixels = image.clone().requires_grad_(True)
        started = clock()
        with torch.enable_grad():
            sum(found.square().mean() for found in net(pixels).values()).backward()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        if attempt:  # the first pass pays for kernel selection and allocation
            best = min(best, clock() - started)
    return best


def paint_check(vgg: VGG, precision: Precision, device: torch.device | str = "cpu") -> Painting:
    """A short seeded Gatys run on a real photo and painting, judged by ``optimize.measures``."""
    content = ImageOps.fit(Image.open(photos.content_photos()[0]).convert("RGB"), (CHECK_SIDE, CHECK_SIDE))
    painting = Image.open(photos.paintings()[0]).convert("RGB")
    settings = TransferSettings(iterations=CHECK_ITERATIONS, max_side=CHECK_SIDE, seed=0,
                                loss_network=vgg.arch.name)
    with torch.enable_grad():
        result = stylize(content, [painting], settings, vgg, device, precision=precision).image
    return Painting(measures.texture_distance(result, painting), measures.colour_distance(result, painting))


def cache_key(vgg: VGG, device: torch.device) -> str:
    """Everything the choice depends on: the machine, the library, the device and the weights."""
    parts = {
        "version": CACHE_VERSION,
        "kind": "loss-network-precision",
        "cpu": cpu.cpu_model(),
        "flags": cpu.relevant_flags(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "weights": vgg.release.sha256 if vgg.release else vgg.source,
        "arch": vgg.arch.name,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

