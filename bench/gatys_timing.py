"""Seconds per Gatys iteration: the one timing both ``bench.gatys_speed`` (the report) and
``bench.gatys_precision`` (the precision check it runs) measure with, kept apart from both so
neither imports the other for it."""

from __future__ import annotations

import itertools

from PIL import Image

from lossnet import FP32, VGG, Precision
from optimize.transfer import TransferSettings, stylize


def seconds_per_iteration(vgg: VGG, content: Image.Image, style: Image.Image, side: int, optimizer: str,
                          iterations: int, precision: Precision = FP32) -> float:
    """Median wall time of one iteration (the first, with its warm-up, excluded)."""
    settings = TransferSettings(iterations=iterations + 1, max_side=side, optimizer=optimizer, seed=0,
                                loss_network=vgg.arch.name)
    result = stylize(content.resize((side, side)), [style], settings, vgg, precision=precision)
    stamps = [row["elapsed"] for row in result.history]
    steps = sorted(b - a for a, b in itertools.pairwise(stamps))
    return steps[len(steps) // 2]
