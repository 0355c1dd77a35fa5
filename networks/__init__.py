"""The feed-forward style networks as PyTorch modules: one file per family, their shared
shape as data.

``layout`` (the encoder / residual / decoder shape all four follow, as data, and the one
builder), ``blocks`` (the residual block three of them share, and the Magenta networks' styled conv
step), ``transformer_net`` (pytorch/examples' Johnson et al. network, and its state-dict
loader), ``engstrom`` (Engstrom's TensorFlow network with TF semantics), ``multistyle``
(Dumoulin et al.'s 26 styles), ``arbitrary`` (Ghiasi et al.'s predictor and transformer) and
``sizes`` (any image size in, the same size out). Module attribute names are each family's
checkpoint keys, so they never change; porting other files' weights in (TensorFlow dumps,
ONNX initializers) stays with the build tools in ``export``.

Build and training time only: serving runs the exported ONNX files, never these modules.
"""

from networks.arbitrary import PREDICTOR_MULTIPLE, STYLE_DIM, StylePredictor, StyleTransformer
from networks.engstrom import EngstromNet, TFConv, TFConvTranspose
from networks.layout import ARBITRARY, JOHNSON, MULTISTYLE, Layout, build
from networks.multistyle import MultistyleNet
from networks.sizes import MIN_SIDE, SIZE_MULTIPLE, SizePreserving, StyledSizePreserving
from networks.transformer_net import TransformerNet, load_pytorch_examples

__all__ = [
    "ARBITRARY", "JOHNSON", "MIN_SIDE", "MULTISTYLE", "PREDICTOR_MULTIPLE", "SIZE_MULTIPLE", "STYLE_DIM",
    "EngstromNet", "Layout", "MultistyleNet", "SizePreserving", "StylePredictor", "StyleTransformer",
    "StyledSizePreserving", "TFConv", "TFConvTranspose", "TransformerNet", "build", "load_pytorch_examples",
]
