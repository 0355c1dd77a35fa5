"""Reading Ghiasi et al.'s arbitrary stylization pair (``networks.StylePredictor``,
``networks.StyleTransformer``) out of Magenta's int8 ONNX files: each convolution's weights
come dequantized (``export.magenta_weights``) and are copied into the PyTorch module.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from networks.arbitrary import SameConv, StylePredictor, StyleTransformer


def _copy_conv(conv: nn.Conv2d, weight_bias: tuple) -> None:
    weight, bias = weight_bias
    if tuple(weight.shape) != tuple(conv.weight.shape):
        raise ValueError(f"weight shape {weight.shape}, expected {tuple(conv.weight.shape)}")
    conv.weight.copy_(torch.from_numpy(weight.copy()))
    conv.bias.copy_(torch.from_numpy(bias.copy()))


def _copy_linear(linear: nn.Linear, weight_bias: tuple) -> None:
    weight, bias = weight_bias  # a 1x1 conv [out, 100, 1, 1] on the style vector
    linear.weight.copy_(torch.from_numpy(weight.reshape(weight.shape[0], -1).copy()))
    linear.bias.copy_(torch.from_numpy(bias.copy()))


def load_predictor(path: Path) -> StylePredictor:
    """From ``arbitrary_predict.onnx``: convs ``MobilenetV2/Conv``, ``.../expanded_conv_<i>/
    {expand,depthwise,project}``, ``MobilenetV2/Conv_1`` and ``mobilenet_conv/Conv``."""
    from export.magenta_weights import conv_weights

    layers = conv_weights(path)
    net = StylePredictor()
    blocks = list(net.features)
    with torch.no_grad():
        _copy_conv(blocks[0].conv, layers["MobilenetV2/Conv"])
        for i, block in enumerate(blocks[1:-1]):
            prefix = "MobilenetV2/expanded_conv" + (f"_{i}" if i else "")
            for part in ("expand", "depthwise", "project"):
                module = getattr(block, part)
                if isinstance(module, SameConv):
                    _copy_conv(module.conv, layers[f"{prefix}/{part}"])
        _copy_conv(blocks[-1].conv, layers["MobilenetV2/Conv_1"])
        _copy_conv(net.bottleneck, layers["mobilenet_conv/Conv"])
    return net.eval()


def load_transformer(path: Path) -> StyleTransformer:
    """From ``arbitrary_transform.onnx``: convs ``transformer/contract/conv<i>``,
    ``transformer/residual/residual<i>/conv<j>``, ``transformer/expand/conv<i>/conv``; each
    StyleNorm's scale from ``style_params/<conv>/StyleNorm/Conv_1``, shift from ``.../Conv``."""
    from export.magenta_weights import conv_weights

    layers = conv_weights(path)
    net = StyleTransformer()
    named = [(f"transformer/contract/conv{i + 1}", m) for i, m in enumerate(net.contract)]
    for i, block in enumerate(net.residual):
        named += [(f"transformer/residual/residual{i + 1}/conv{j}", getattr(block, f"conv{j}")) for j in (1, 2)]
    named += [(f"transformer/expand/conv{i + 1}/conv", m) for i, m in enumerate(net.expand)]
    with torch.no_grad():
        for name, module in named:
            _copy_conv(module.conv, layers[name])
            if module.norm is not None:
                _copy_linear(module.norm.scale, layers[f"style_params/{name}/StyleNorm/Conv_1"])
                _copy_linear(module.norm.shift, layers[f"style_params/{name}/StyleNorm/Conv"])
    return net.eval()
