"""Wrappers that let the networks take any image: any ``H x W`` (odd sizes and tiny images
included) comes back at its own size.

The ONNX export traces them, and training, the CLI's ``.pth`` engine and the parity checks
run them, so every path pads the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The networks downsample twice by 2; inputs that are multiples of this map exactly.
SIZE_MULTIPLE = 4
#: Smallest side the networks run at: instance norm needs more than one pixel after both
#: downsamplings, and TransformerNet's 9x9 reflection pad needs a side above 4.
MIN_SIDE = 16


def _padding_to_valid(size: int) -> int:
    """Pixels to add so ``size`` becomes a multiple of 4 and at least ``MIN_SIDE``."""
    below_min = torch.sym_max(MIN_SIDE - size, 0)
    return below_min + (SIZE_MULTIPLE - (size + below_min) % SIZE_MULTIPLE) % SIZE_MULTIPLE


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


class StyledSizePreserving(nn.Module):
    """``SizePreserving`` for networks with a second (style) input: pads by edge replication
    to a multiple of 4 and at least 16 px, runs, crops back to ``H x W``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        y = self.net(F.pad(x, (0, _padding_to_valid(w), 0, _padding_to_valid(h)), mode="replicate"), style)
        return y[..., :h, :w]

