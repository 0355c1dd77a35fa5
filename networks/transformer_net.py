"""Johnson et al.'s image transformation network as written in pytorch/examples
``fast_neural_style`` (``transformer_net.py``).

Its attribute names are that project's, so its published checkpoints, and the ones
``python -m train`` writes, load unchanged: ``load_pytorch_examples``. Float RGB in
``[0, 255]`` as ``[N, 3, H, W]``, in and out.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from networks.layout import JOHNSON, Conv, build


class ConvLayer(nn.Module):
    """Reflection-padded convolution (keeps borders free of dark halos)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsampling then convolution: avoids transposed-conv checkerboards."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, upsample: int):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm; the identity path carries the content through."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, 1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, 3, 1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(y)) + x


def _normed(layer: nn.Module, conv: Conv) -> tuple[nn.Module, nn.InstanceNorm2d]:
    """A conv and the instance norm after it: siblings here, as in the checkpoints' keys."""
    return layer, nn.InstanceNorm2d(conv.out_ch, affine=True)


class TransformerNet(nn.Module):
    """Johnson et al. image transformation network (pytorch/examples layout)."""

    def __init__(self):
        super().__init__()
        parts = build(
            JOHNSON,
            contract=lambda c: _normed(ConvLayer(*c), c),
            residual=ResidualBlock,
            expand=lambda c: _normed(UpsampleConvLayer(*c), c),
            output=lambda c: ConvLayer(*c),
        )
        (self.conv1, self.in1), (self.conv2, self.in2), (self.conv3, self.in3) = parts.contract
        self.res1, self.res2, self.res3, self.res4, self.res5 = parts.residual
        (self.deconv1, self.in4), (self.deconv2, self.in5) = parts.expand
        self.deconv3 = parts.output
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y).clamp(0.0, 255.0)


_OLD_RUNNING_STATS = re.compile(r"in\d+\.running_(mean|var)$")


def load_pytorch_examples(path: Path) -> TransformerNet:
    """Loads a ``TransformerNet`` state dict (pytorch/examples' or ``python -m train``'s),
    dropping the running stats that old PyTorch versions saved for InstanceNorm (current
    InstanceNorm has none and would refuse them)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not _OLD_RUNNING_STATS.search(k)}
    net = TransformerNet()
    net.load_state_dict(state)
    return net.eval()
