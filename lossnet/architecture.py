"""VGG16 and VGG19 (Simonyan & Zisserman 2014) as configuration data, and one builder.

As in torchvision's ``models/vgg.py``, a layout is a list of conv widths with ``"M"`` for
a 2x2 max-pool; ``build_features`` turns it into the same ``nn.Sequential`` torchvision
builds, so its module indices (and a release's ``features.N.weight`` keys) match. Every
module also gets the name the style-transfer papers use -- ``conv1_1``, ``relu1_1``, ...
``pool1`` -- so layer lists read like Gatys et al. and Johnson et al., not like indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from torch import nn

M = "M"
LAYOUTS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "vgg19": [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M],
}


@dataclass(frozen=True)
class Architecture:
    """One VGG variant: its layout and the environment variable that may name its weights file."""

    name: str
    layout: tuple[int | str, ...]
    env: str

    @cached_property
    def layer_names(self) -> list[str]:
        """One name per module of the feature stack, in order: conv1_1, relu1_1, ..., pool1, ..."""
        names, block, index = [], 1, 1
        for item in self.layout:
            if item == M:
                names.append(f"pool{block}")
                block, index = block + 1, 1
            else:
                names += [f"conv{block}_{index}", f"relu{block}_{index}"]
                index += 1
        return names

    @cached_property
    def convs(self) -> list[tuple[str, int, int, int]]:
        """``(name, module index, in channels, out channels)`` of every convolution."""
        found, channels, block, index, module = [], 3, 1, 1, 0
        for item in self.layout:
            if item == M:
                block, index, module = block + 1, 1, module + 1
            else:
                found.append((f"conv{block}_{index}", module, channels, int(item)))
                channels, index, module = int(item), index + 1, module + 2
        return found

    def smallest_side(self, layers: list[str] | tuple[str, ...]) -> int:
        """The shortest image side that reaches the deepest of ``layers``: each pooling before it
        halves the size, and a side of 0 is an error deep inside torch."""
        deepest = max(self.layer_names.index(name) for name in layers)
        return 2 ** sum(name.startswith("pool") for name in self.layer_names[:deepest])

    def unknown(self, layers: list[str] | tuple[str, ...]) -> list[str]:
        return sorted(set(layers) - set(self.layer_names))


ARCHITECTURES = {
    "vgg16": Architecture("vgg16", tuple(LAYOUTS["vgg16"]), "STYLE_VGG16_WEIGHTS"),
    "vgg19": Architecture("vgg19", tuple(LAYOUTS["vgg19"]), "STYLE_VGG19_WEIGHTS"),
}


def build_features(arch: Architecture) -> nn.Sequential:
    """The convolutional stack, untrained: 3x3 convolutions (padding 1), ReLUs, 2x2 max-pools.

    The ReLUs are not in-place (unlike torchvision's): a tapped activation must survive the
    next layer."""
    layers: list[nn.Module] = []
    channels = 3
    for item in arch.layout:
        if item == M:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)
