"""The layers the style networks share: the residual block of Engstrom's network and of
both Magenta networks (``multistyle``, ``arbitrary``), and the Magenta networks' reflection-
padded, style-normed conv step, their arrangement and their sigmoid end.

A family chooses its conv (bias or not) and its norm (a conditional instance norm, a norm
fed by a style vector, or none); the arrangement is written once here. The attribute names
(``conv``, ``norm``, ``conv1``, ``conv2``) are part of every family's checkpoint keys, so
they never change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from networks.layout import Layout, Parts, build


class ResidualBlock(nn.Module):
    """``x + conv2(conv1(x))``: two 3x3 convs of ``conv``'s family at ``channels``, the second
    without ReLU. A styled family's convs take the style as a second input, and both get it."""

    def __init__(self, channels: int, conv: Callable[..., nn.Module]):
        super().__init__()
        self.conv1 = conv(channels, channels, 3, 1)
        self.conv2 = conv(channels, channels, 3, 1, relu=False)

    def forward(self, x: torch.Tensor, *style: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x, *style), *style)


class ReflectConv(nn.Module):
    """(Nearest upsampling,) reflection pad, conv, then ``norm`` (made for ``out_ch``; it is
    given the style, which sets its scale and shift) unless None, and ReLU unless ``relu``
    is off. Upsampling before the conv, not a transposed conv, avoids checkerboard artifacts."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, upsample: int = 1,
                 bias: bool, norm: Callable[[int], nn.Module] | None, relu: bool = True):
        super().__init__()
        self.upsample, self.relu, self.pad = upsample, relu, kernel // 2
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, bias=bias)
        self.norm = norm(out_ch) if norm is not None else None

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        y = self.conv(F.pad(x, (self.pad,) * 4, mode="reflect"))
        if self.norm is not None:
            y = self.norm(y, style)
        return F.relu(y) if self.relu else y


def reflect_parts(layout: Layout, conv: Callable[..., ReflectConv], **contract: Any) -> Parts:
    """The Magenta networks' modules: every step is the family's ``conv`` (upsampling on the
    way up, no ReLU at the output, which the sigmoid follows), residual blocks of it between;
    ``contract`` are options for the contracting convs only."""
    return build(
        layout,
        contract=lambda c: conv(*c, **contract),
        residual=lambda channels: ResidualBlock(channels, conv),
        expand=lambda c: conv(c.in_ch, c.out_ch, c.kernel, upsample=c.scale),
        output=lambda c: conv(*c, relu=False),
    )


def styled_forward(layers: Iterable[nn.Module], x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Magenta's convention: ``[0, 255]`` in, scaled to ``[0, 1]``, each layer given the
    style, and a sigmoid back to ``[0, 255]``."""
    y = x / 255.0
    for layer in layers:
        y = layer(y, style)
    return torch.sigmoid(y) * 255.0
