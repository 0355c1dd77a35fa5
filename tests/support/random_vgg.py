"""Test-only loss networks: the VGG architectures with seeded random weights. Not style transfer.

Tests and the benchmark's load runs need a loss network where no ImageNet file can be had;
``lossnet`` itself only ever loads verified releases. A file written by
``write_random_weights`` loads through ``lossnet.load_vgg`` only with ``TEST_OPT_IN_ENV``
in the environment (``STYLE_VGG_ALLOW_UNVERIFIED``, declared test-only in ``core.settings``),
because its checksum matches no release.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lossnet import ARCHITECTURES, ENV_ALLOW_UNVERIFIED, TORCHVISION, VGG, build_features

#: The environment a process needs to load a file written by ``write_random_weights``.
TEST_OPT_IN_ENV = {ENV_ALLOW_UNVERIFIED: "1"}


def random_vgg(arch_name: str = "vgg19", seed: int = 0) -> VGG:
    """The architecture with seeded random weights (torchvision's init: Kaiming normal,
    fan-out, so activations keep a workable scale through 16 convolutions)."""
    arch = ARCHITECTURES[arch_name]
    features = build_features(arch)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in features.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
                module.bias.zero_()
    features.requires_grad_(False).eval()
    return VGG(arch, features, TORCHVISION, f"random {arch_name} weights, seed {seed} (TEST ONLY)")


def write_random_weights(path: Path, arch_name: str = "vgg19", seed: int = 0) -> Path:
    """Writes ``random_vgg``'s weights as a state_dict (``features.*`` keys, like torchvision's
    releases). Loading it needs ``TEST_OPT_IN_ENV``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    features = random_vgg(arch_name, seed).features
    torch.save({f"features.{key}": value for key, value in features.state_dict().items()}, path)
    return path
