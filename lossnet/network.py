"""Named feature taps on a frozen VGG, and the two measurements both style paths build on.

``LossNetwork`` takes RGB in [0, 1] whatever the weights were trained on and converts to
their convention itself, so callers never see BGR or Caffe means. ``gram`` is the one Gram
matrix (Gatys et al.; Johnson et al.): channel correlations divided by ``C * H * W``, so
images of different sizes give comparable targets.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lossnet.precision import FP32, Precision
from lossnet.weights import VGG


class LossNetwork(nn.Module):
    """The VGG cut after the deepest requested layer; returns the requested activations by name.

    Frozen and in eval mode: only the image (or the network being trained) gets gradients.
    Under a reduced ``precision`` the convolutions after the first block run in it
    (channels-last), but the activations handed back are float32, so everything downstream
    stays in full precision.
    """

    def __init__(self, vgg: VGG, layers: Iterable[str], precision: Precision = FP32):
        super().__init__()
        names = vgg.arch.layer_names
        wanted = set(layers)
        unknown = vgg.arch.unknown(wanted)
        if unknown or not wanted:
            raise ValueError(f"unknown {vgg.arch.name} layer(s) {unknown}; known: {', '.join(names)}")
        self.layers = sorted(wanted, key=names.index)
        depth = names.index(self.layers[-1]) + 1
        self.stack = nn.Sequential(*list(vgg.features)[:depth])
        self.precision = precision
        # The first block (up to pool1) stays in float32 under a reduced precision: it sees the
        # pixels themselves, and bf16's 8-bit mantissa rounds away the small pixel changes an
        # optimizer makes, which left L-BFGS chasing noise. It is a small share of the work.
        self.names = names[:depth]
        self.full_precision = self.names.index("pool1") if "pool1" in self.names else depth
        if precision.channels_last:
            self.stack.to(memory_format=torch.channels_last)
        convention = vgg.convention
        self.bgr = convention.bgr
        self.register_buffer("scale", torch.tensor(convention.scale))
        self.register_buffer("mean", torch.tensor(convention.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(convention.std).view(1, 3, 1, 1))
        self.feature_scale = convention.feature_scale
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[N, 3, H, W]`` RGB in [0, 1] -> ``{layer name: activations}``."""
        x = image.flip(1) if self.bgr else image
        x = (x * self.scale - self.mean) / self.std
        if self.precision.channels_last:  # a copy: the optimized pixels stay contiguous for L-BFGS
            x = x.contiguous(memory_format=torch.channels_last)
        wanted = set(self.layers)
        found = {}
        for index, (name, module) in enumerate(zip(self.names, self.stack, strict=True)):
            if index < self.full_precision:
                x = module(x)
            else:
                with self.precision.autocast():
                    x = module(x)
            if name in wanted:
                found[name] = x
        return {name: value.float() if self.feature_scale == 1.0 else value.float() * self.feature_scale
                for name, value in found.items()}


def gram(features: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` activations -> ``[N, C, C]`` channel correlations over ``C * H * W``.

    Computed in float32 even under autocast: squared activations summed over a 256x256 map
    overflow float16."""
    n, c, h, w = features.shape
    flat = features.float().reshape(n, c, h * w)
    with torch.autocast(features.device.type, enabled=False):
        return flat @ flat.transpose(1, 2) / (c * h * w)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels; penalizes high-frequency noise."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()
