"""Logan Engstrom's TensorFlow ``fast-style-transfer`` network, ported with TF semantics.

Zero 'SAME' padding, bias-free convs, instance norm with eps 1e-3 and a ``150 * tanh +
127.5`` output, so that his trained variables (read by ``export.weights.load_engstrom``)
reproduce his results. Float RGB in ``[0, 255]`` as ``[N, 3, H, W]``, in and out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.blocks import ResidualBlock
from networks.layout import JOHNSON, build


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding for one axis: (before, after); the odd pixel goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def even_size_same_padding(kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding for any even size (stride 1 or 2): it does not depend on the size
    then, so the exported graph has fixed pads. ``SizePreserving`` feeds multiples of 4."""
    return tf_same_padding(2 * stride, kernel, stride)


class TFInstanceNorm(nn.Module):
    """``scale * (x - mean) / sqrt(var + eps) + shift`` per image and channel, eps = 1e-3."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(channels))
        self.scale = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.scale, bias=self.shift, eps=self.eps)


class TFConv(nn.Module):
    """Bias-free conv with TF 'SAME' zero padding, then instance norm and optional ReLU.

    Exact for even input sizes (see ``even_size_same_padding``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, relu: bool = True):
        super().__init__()
        self.relu = relu
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, bias=False)
        self.norm = TFInstanceNorm(out_ch)
        before, after = even_size_same_padding(kernel, stride)
        self.pad = (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(F.pad(x, self.pad)))
        return F.relu(y) if self.relu else y


class TFConvTranspose(nn.Module):
    """TF ``conv2d_transpose`` with 'SAME' padding and output size ``stride * input``.

    TF defines it as the gradient of a 'SAME' conv on the ``2n`` output. That conv pads
    (0 before, 1 after) for the 3x3/stride-2 case, so output pixel ``o`` gathers from input
    ``i`` at ``o = 2i + k``: a transposed conv with no padding, keeping the first ``2n``
    rows and columns. (``padding=1, output_padding=1`` would shift the result by a pixel.)
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.ConvTranspose2d(in_ch, out_ch, kernel, stride, bias=False)
        self.norm = TFInstanceNorm(out_ch)
        self._pad_before = even_size_same_padding(kernel, stride)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] * self.stride, x.shape[-1] * self.stride
        y = self.conv(x)
        p = self._pad_before
        y = y[..., p : p + h, p : p + w]
        return F.relu(self.norm(y))


class EngstromNet(nn.Module):
    """Engstrom's fast-style-transfer network; layer order = TF variable creation order."""

    def __init__(self):
        super().__init__()
        parts = build(
            JOHNSON,
            contract=lambda c: TFConv(*c),
            residual=lambda channels: ResidualBlock(channels, TFConv),
            expand=lambda c: TFConvTranspose(*c),  # TF upsamples by a stride-2 transposed conv
            output=lambda c: TFConv(*c, relu=False),
        )
        self.conv1, self.conv2, self.conv3 = parts.contract
        self.residuals = nn.Sequential(*parts.residual)
        self.deconv1, self.deconv2 = parts.expand
        self.conv_out = parts.output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.conv2(self.conv1(x)))
        y = self.residuals(y)
        y = self.conv_out(self.deconv2(self.deconv1(y)))
        return (150.0 * torch.tanh(y) + 127.5).clamp(0.0, 255.0)
