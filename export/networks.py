"""The feed-forward style networks, one small class per concept.

Two trained families are served:

* ``TransformerNet`` – Johnson et al. as written in pytorch/examples ``fast_neural_style``.
  Attribute names match that project so its published checkpoints load unchanged.
* ``EngstromNet`` – Logan Engstrom's TensorFlow ``fast-style-transfer`` network, ported
  with TF semantics (zero 'SAME' padding, bias-free convs, instance norm eps 1e-3,
  ``150 * tanh + 127.5`` output) so that his trained variables reproduce his results.

Both take and return float RGB in ``[0, 255]`` as ``[N, 3, H, W]``. ``SizePreserving``
wraps either one so that any ``H x W`` (odd sizes included) comes back at its own size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------
# Johnson / pytorch-examples TransformerNet
# ---------------------------------------------------------------------------------------


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


class TransformerNet(nn.Module):
    """Johnson et al. image transformation network (pytorch/examples layout)."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvLayer(3, 32, 9, 1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, 3, 2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, 3, 2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        self.deconv1 = UpsampleConvLayer(128, 64, 3, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, 3, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y).clamp(0.0, 255.0)


# ---------------------------------------------------------------------------------------
# Engstrom (TensorFlow fast-style-transfer) network
# ---------------------------------------------------------------------------------------


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


class TFResidualBlock(nn.Module):
    """``x + IN(conv(relu(IN(conv(x)))))`` – the second conv has no ReLU."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.conv1 = TFConv(channels, channels, 3, 1)
        self.conv2 = TFConv(channels, channels, 3, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class EngstromNet(nn.Module):
    """Engstrom's fast-style-transfer network; layer order = TF variable creation order."""

    def __init__(self):
        super().__init__()
        self.conv1 = TFConv(3, 32, 9, 1)
        self.conv2 = TFConv(32, 64, 3, 2)
        self.conv3 = TFConv(64, 128, 3, 2)
        self.residuals = nn.Sequential(*(TFResidualBlock(128) for _ in range(5)))
        self.deconv1 = TFConvTranspose(128, 64, 3, 2)
        self.deconv2 = TFConvTranspose(64, 32, 3, 2)
        self.conv_out = TFConv(32, 3, 9, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.conv2(self.conv1(x)))
        y = self.residuals(y)
        y = self.conv_out(self.deconv2(self.deconv1(y)))
        return (150.0 * torch.tanh(y) + 127.5).clamp(0.0, 255.0)


# ---------------------------------------------------------------------------------------
# Wrappers used for serving and export
# ---------------------------------------------------------------------------------------

#: Both networks downsample twice by 2; inputs that are multiples of this map exactly.
SIZE_MULTIPLE = 4
#: Smallest side the networks run at: instance norm needs more than one pixel after both
#: downsamplings, and TransformerNet's 9x9 reflection pad needs a side above 4.
MIN_SIDE = 16


class SizePreserving(nn.Module):
    """Pads (edge-replicating) to a multiple of 4 and at least 16 px, runs the network,
    crops back to ``H x W``.

    Without it an odd-sized input comes back a few pixels larger (or shifted), because
    each stride-2 stage rounds the size up, and a tiny image cannot run at all.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        pad_h = _padding_to_valid(h)
        pad_w = _padding_to_valid(w)
        y = self.net(F.pad(x, (0, pad_w, 0, pad_h), mode="replicate"))
        return y[..., :h, :w]


def _padding_to_valid(size: int) -> int:
    """Pixels to add so ``size`` becomes a multiple of 4 and at least ``MIN_SIDE``."""
    below_min = torch.sym_max(MIN_SIDE - size, 0)
    return below_min + (SIZE_MULTIPLE - (size + below_min) % SIZE_MULTIPLE) % SIZE_MULTIPLE


class Uint8Image(nn.Module):
    """``uint8 [H, W, 3]`` RGB in and out, so an embedder needs no pre/post-processing."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        y = self.net(x)[0].permute(1, 2, 0)
        return torch.round(y).clamp(0.0, 255.0).to(torch.uint8)
