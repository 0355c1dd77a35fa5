"""The Gatys path's cost: seconds per iteration, and whether coarse-to-fine reaches the loss sooner.

Runs with random VGG19 weights (ImageNet weights cannot be downloaded on the benchmark
machines): per-iteration time depends only on the architecture, so those figures carry
over; the coarse-to-fine comparison depends on the loss landscape and should be rerun
with real weights (``python -m optimize.benchmark --real-weights``) before relying on it.
"""

from __future__ import annotations

import torch
from PIL import Image

from optimize.benchmark import IMAGES, coarse_to_fine, seconds_per_iteration
from optimize.vgg import random_vgg19_features


def measure(sides: list[int], iterations: int, ctf_side: int, ctf_iterations: int, scales: int,
            threads: int) -> dict:
    torch.set_num_threads(threads)
    features = random_vgg19_features(0)
    content = Image.open(IMAGES / "content" / "face.jpg").convert("RGB")
    style = Image.open(IMAGES / "styles" / "wave.jpg").convert("RGB")
    per_iteration = {
        f"{side}px_{optimizer}": seconds_per_iteration(features, content, style, side, optimizer, iterations)
        for side in sides for optimizer in ("lbfgs", "adam")
    }
    return {
        "threads": threads,
        "vgg_weights": "random (same architecture; see module docstring)",
        "seconds_per_iteration": per_iteration,
        "coarse_to_fine": coarse_to_fine(features, content, style, ctf_side, ctf_iterations, scales),
    }
