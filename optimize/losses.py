"""The Gatys objective: content, style (Gram matrix, ``lossnet.gram``) and total-variation losses.

Normalization follows the PyTorch neural-transfer tutorial (Gram matrices divided by the
number of feature elements, mean-squared errors), so its weight scale -- content 1, style
1e6 -- carries over and a weight does not change meaning with the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossnet import LossNetwork, gram, total_variation


class Objective:
    """The weighted loss for one resolution level, with its targets computed once up front.

    Several styles are blended in Gram space: the target Gram matrix of each layer is the
    blend-weighted mean of the styles' Gram matrices (as in Johnson's neural-style), so a
    blend costs no more per iteration than a single style.
    """

    def __init__(
        self,
        net: LossNetwork,
        content: torch.Tensor,
        styles: list[torch.Tensor],
        blend: list[float],
        content_layers: dict[str, float],
        style_layers: dict[str, float],
        content_weight: float,
        style_weight: float,
        tv_weight: float,
    ):
        self.net = net
        self.content_layers = content_layers
        self.style_layers = style_layers
        self.weights = {"content": content_weight, "style": style_weight, "tv": tv_weight}
        with torch.no_grad():
            found = net(content)
            self.content_targets = {name: found[name].detach() for name in content_layers}
            total = sum(blend)
            self.style_targets = {name: 0.0 for name in style_layers}
            for style, share in zip(styles, blend, strict=True):
                if share == 0:
                    continue
                found = net(style)
                for name in style_layers:
                    self.style_targets[name] = self.style_targets[name] + gram(found[name]) * (share / total)

    def parts(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted losses of ``image`` ([1, 3, H, W] in [0, 1])."""
        found = self.net(image)
        content = sum(
            weight * F.mse_loss(found[name], self.content_targets[name])
            for name, weight in self.content_layers.items()
        )
        style = sum(
            weight * F.mse_loss(gram(found[name]), self.style_targets[name])
            for name, weight in self.style_layers.items()
        )
        return {"content": content, "style": style, "tv": total_variation(image)}

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Total weighted loss (for backward) and each weighted term as a float (for reports)."""
        weighted = {name: self.weights[name] * value for name, value in self.parts(image).items()}
        total = weighted["content"] + weighted["style"] + weighted["tv"]
        report = {name: _number(value) for name, value in weighted.items()}
        report["total"] = _number(total)
        return total, report


def _number(value: torch.Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
