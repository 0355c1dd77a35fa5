"""A rewrite of the exported float graph: the same function, computed faster on CPUs.

The 9x9 convolution that writes the RGB output makes 3 channels per pixel: too few for
ONNX Runtime's convolution kernels to keep the vector units busy, so its share of the
network's time is far above its share of the multiply-adds.

Regrouped as ``SpaceToDepth(4)`` (each 4x4 pixel block becomes one pixel with 16x the
channels) -> a 3x3 convolution over blocks -> ``DepthToSpace(4)``, the same sums take
144/81 = 1.8x the multiply-adds (the zero taps of a 9x9 window laid on 3x3 blocks of 4x4)
but write 48 channels per position, which the kernels run at full width.
Each output pixel still sums exactly the inputs and weights it did before, so results agree
to float rounding; the export's parity check against PyTorch guards it.

Measured and not done (README, "Performance", has the figures): the same for the 9x9 *input*
conv (3 -> 32 channels) made the network slower, and rewriting the stride-2 transposed convs
as 2x2 convs + ``DepthToSpace(2)`` was no faster in float32 and, quantized, lost int8 PSNR
for no int8 speed.

Sizes: the block convolution needs the convolution's input height and width to be
multiples of 4. The exported graphs pad every image to a multiple of 4 first
(``networks.SizePreserving``), and tiling runs tiles aligned to 4, so they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Pixels per block side.
BLOCK = 4
#: Convolutions writing at most this many channels (RGB) are regrouped.
MAX_OUT_CHANNELS = 3


def blocked_weights(weight: np.ndarray) -> np.ndarray:
    """``[O, C, K, K]`` -> ``[B²O, B²C, Q, Q]`` for a stride-1 convolution over ``B x B`` blocks.

    ONNX's ``SpaceToDepth`` puts block offset ``(ry, rx)`` of channel ``c`` at channel
    ``(ry*B + rx)*C + c``, and ``DepthToSpace`` in DCR mode reads output offset ``(ay, ax)``
    of channel ``o`` from ``(ay*B + ax)*O + o``. Output pixel ``B*i + ay`` takes input pixel
    ``B*(i + q - P) + ry`` (``P`` = the padding in blocks) through tap ``k = B*q + ry - ay``
    of the original kernel; taps outside ``0..K-1`` are zero.
    """
    out_ch, in_ch, size, _ = weight.shape
    taps = (size - 1) // BLOCK + 1
    blocked = np.zeros((BLOCK * BLOCK * out_ch, BLOCK * BLOCK * in_ch, taps, taps), weight.dtype)
    offsets = [(a, b) for a in range(BLOCK) for b in range(BLOCK)]
    for (ay, ax) in offsets:
        rows = slice((ay * BLOCK + ax) * out_ch, (ay * BLOCK + ax + 1) * out_ch)
        for (ry, rx) in offsets:
            cols = slice((ry * BLOCK + rx) * in_ch, (ry * BLOCK + rx + 1) * in_ch)
            for qy in range(taps):
                for qx in range(taps):
                    ky, kx = BLOCK * qy + ry - ay, BLOCK * qx + rx - ax
                    if 0 <= ky < size and 0 <= kx < size:
                        blocked[rows, cols, qy, qx] = weight[:, :, ky, kx]
    return blocked


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _regroupable(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> bool:
    """A plain square stride-1 conv writing RGB whose window and padding fit the blocks."""
    if node.op_type != "Conv" or node.input[1] not in weights:
        return False
    out_ch, _, height, width = weights[node.input[1]].dims
    attrs = _attributes(node)
    pads = attrs.get("pads", [0, 0, 0, 0])
    return (
        out_ch <= MAX_OUT_CHANNELS
        and height == width
        and (height - 1) % BLOCK == 0
        and attrs.get("strides", [1, 1]) == [1, 1]
        and attrs.get("dilations", [1, 1]) == [1, 1]
        and attrs.get("group", 1) == 1
        and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        and len(set(pads)) == 1
        and pads[0] % BLOCK == 0
    )


def regroup_rgb_output_convs(model: onnx.ModelProto) -> int:
    """Rewrites, in place, every conv ``_regroupable`` finds; returns how many."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes, done = [], 0
    for node in graph.node:
        if not _regroupable(node, weights):
            nodes.append(node)
            continue
        name, weight = node.name or f"regrouped_conv_{done}", weights[node.input[1]]
        blocked = numpy_helper.from_array(blocked_weights(numpy_helper.to_array(weight)), f"{weight.name}.blocked")
        inputs = [f"{name}_blocks_in", blocked.name]
        new_initializers = [blocked]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(weights[node.input[2]])
            new_initializers.append(numpy_helper.from_array(np.tile(bias, BLOCK * BLOCK), f"{node.input[2]}.blocked"))
            inputs.append(new_initializers[-1].name)
        graph.initializer.extend(new_initializers)
        padding = _attributes(node).get("pads", [0])[0] // BLOCK
        taps = blocked.dims[2]
        nodes += [
            helper.make_node("SpaceToDepth", [node.input[0]], [inputs[0]], name=f"{name}_to_blocks", blocksize=BLOCK),
            helper.make_node("Conv", inputs, [f"{name}_blocks_out"], name=name,
                             kernel_shape=[taps, taps], pads=[padding] * 4),
            helper.make_node("DepthToSpace", [f"{name}_blocks_out"], list(node.output), name=f"{name}_from_blocks",
                             blocksize=BLOCK, mode="DCR"),
        ]
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    return done


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)

