"""The perceptual loss of Johnson et al.: content at one VGG layer, style as Gram matrices.

Normalized as pytorch/examples ``fast_neural_style`` does (mean-squared errors, Gram
matrices divided by ``C * H * W``), so the recipe's weights -- content 1e5, style 1e10 --
mean the same here as there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossnet import LossNetwork, gram, total_variation


class PerceptualLoss(nn.Module):
    """Weighted content + style + TV losses of a stylized batch against its content batch.

    Images are in the TransformerNet range, [0, 255]; the loss network takes [0, 1] and
    converts to its weights' convention itself. The style image's Gram matrices are computed
    once, here, and kept as buffers.
    """

    def __init__(
        self,
        taps: LossNetwork,
        style_image: torch.Tensor,
        content_layers: tuple[str, ...],
        style_layers: tuple[str, ...],
        content_weight: float,
        style_weight: float,
        tv_weight: float,
    ):
        super().__init__()
        self.taps = taps
        self.content_layers = content_layers
        self.style_layers = style_layers
        self.weights = {"content": content_weight, "style": style_weight, "tv": tv_weight}
        with torch.no_grad():
            found = taps(style_image / 255.0)
        for name in style_layers:
            self.register_buffer(f"target_{name}", gram(found[name]))

    def forward(self, stylized: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted terms and their sum (``"total"``), each a scalar tensor."""
        with torch.no_grad():
            targets = self.taps(content / 255.0)
        found = self.taps(stylized / 255.0)
        content_loss = sum(F.mse_loss(found[n].float(), targets[n].float()) for n in self.content_layers)
        style_loss = 0.0
        for name in self.style_layers:
            current = gram(found[name])
            style_loss = style_loss + F.mse_loss(current, getattr(self, f"target_{name}").expand_as(current))
        terms = {
            "content": self.weights["content"] * content_loss,
            "style": self.weights["style"] * style_loss,
            "tv": self.weights["tv"] * total_variation(stylized.float() / 255.0),
        }
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms
