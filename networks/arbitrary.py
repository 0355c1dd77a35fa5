"""Ghiasi et al.'s arbitrary stylization pair ("Exploring the structure of a real-time,
arbitrary neural artistic stylization network", 2017), in Magenta's small TFLite form.

* ``StylePredictor`` – MobileNetV2 (width 1.0) reads a square style image and returns its
  100-number style vector (global average pool, then a 1x1 "bottleneck" conv).
* ``StyleTransformer`` – a small encoder / residual / decoder network whose instance norms
  take their scale and shift from the style vector through 1x1 convs (``StyleNorm``), so any
  painting's vector stylizes in one forward pass.

Both take float RGB ``[N, 3, H, W]`` in ``[0, 255]``. The predictor's convolutions use TF
'SAME' padding, exact for sides that are multiples of 32 (``PREDICTOR_MULTIPLE``); the
transformer runs at any size through ``networks.StyledSizePreserving``. Their weights are
read from the int8 ONNX files by ``export.arbitrary``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from networks.blocks import ReflectConv, reflect_parts, styled_forward
from networks.layout import ARBITRARY

STYLE_DIM = 100
#: The predictor halves the size five times; sides that are multiples of this stay even at
#: every stride-2 conv, where TF 'SAME' padding is (0 before, 1 after).
PREDICTOR_MULTIPLE = 32
#: MobileNetV2 inverted-residual stages as (expansion, channels, repeats, first stride).
MOBILENET_V2 = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)

# ---------------------------------------------------------------------------------------
# Style predictor
# ---------------------------------------------------------------------------------------


class SameConv(nn.Module):
    """Conv with bias and TF 'SAME' padding for even sizes, then ReLU6 unless ``linear``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, groups=groups)
        total = max(kernel - stride, 0)  # 'SAME' on an even size: the odd pixel goes after
        self.pad = (total // 2, total - total // 2) * 2
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x, self.pad))
        return y if self.linear else F.relu6(y)


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; identity added when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_ch * expansion
        self.expand = SameConv(in_ch, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = SameConv(hidden, hidden, 3, stride, groups=hidden)
        self.project = SameConv(hidden, out_ch, 1, linear=True)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class StylePredictor(nn.Module):
    """MobileNetV2 features -> global mean -> 1x1 conv to the style vector ``[N, 100]``."""

    def __init__(self):
        super().__init__()
        blocks: list[nn.Module] = [SameConv(3, 32, 3, 2)]
        channels = 32
        for expansion, out_ch, repeats, stride in MOBILENET_V2:
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out_ch, stride if i == 0 else 1, expansion))
                channels = out_ch
        blocks.append(SameConv(channels, 1280, 1))
        self.features = nn.Sequential(*blocks)
        self.bottleneck = nn.Conv2d(1280, STYLE_DIM, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x / 255.0).mean(dim=(2, 3), keepdim=True)
        return self.bottleneck(pooled).flatten(1)


# ---------------------------------------------------------------------------------------
# Style transformer
# ---------------------------------------------------------------------------------------


class StyleNorm(nn.Module):
    """Instance norm (eps 1e-5) with scale and shift computed from the style vector."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.scale = nn.Linear(STYLE_DIM, channels)
        self.shift = nn.Linear(STYLE_DIM, channels)
        self.eps = eps

    def forward(self, x: torch.Tensor, style_vector: torch.Tensor) -> torch.Tensor:
        # One style vector ([1, 100]) for the whole batch: the norm's affine is per channel.
        scale, shift = self.scale(style_vector).reshape(-1), self.shift(style_vector).reshape(-1)
        return F.instance_norm(x, weight=scale, bias=shift, eps=self.eps)


#: The transformer's conv step: convs with bias, each followed by a ``StyleNorm``.
StyleConv = partial(ReflectConv, bias=True, norm=StyleNorm)


class StyleTransformer(nn.Module):
    """Contract (plain convs) -> five style-normed residual blocks -> expand -> sigmoid."""

    def __init__(self):
        super().__init__()
        parts = reflect_parts(ARBITRARY, StyleConv, norm=None)  # the style enters after the contraction
        self.contract = nn.ModuleList(parts.contract)
        self.residual = nn.ModuleList(parts.residual)
        self.expand = nn.ModuleList([*parts.expand, parts.output])

    def forward(self, x: torch.Tensor, style_vector: torch.Tensor) -> torch.Tensor:
        return styled_forward([*self.contract, *self.residual, *self.expand], x, style_vector)
