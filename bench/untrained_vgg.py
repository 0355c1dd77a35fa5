"""An untrained VGG for timing: per-iteration time depends only on the architecture.

The benchmark times the Gatys loop on VGG19 where no ImageNet file can be had. ``lossnet``
only loads verified releases, so the network is built here from its layout with
torchvision's initialisation; it paints nothing and is never served.
"""

from __future__ import annotations

import torch
from torch import nn

from lossnet import ARCHITECTURES, TORCHVISION, VGG, build_features


def untrained_vgg(arch_name: str, seed: int = 0) -> VGG:
    """``arch_name`` ("vgg16", "vgg19") with Kaiming normal (fan-out) weights and zero biases:
    activations keep a workable scale through 16 convolutions, so the optimizer runs every
    iteration it is given, as it would on trained weights."""
    arch = ARCHITECTURES[arch_name]
    features = build_features(arch)
    torch.manual_seed(seed)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    features.requires_grad_(False).eval()
    return VGG(arch, features, TORCHVISION, f"untrained {arch_name}, seed {seed} (timing only)")
