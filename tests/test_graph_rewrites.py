"""``export.graph_rewrites``: few-channel convs regrouped over 4x4 blocks compute the same
function (checked here on single convs against ONNX Runtime, and on every built style by
the export's parity check against PyTorch)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.graph_rewrites import regroup_rgb_output_convs

from .conftest import ONNX_DIR


def _conv_model(out_ch: int, in_ch: int, kernel: int, pads: int, stride: int = 1, bias: bool = True,
                seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.1, (out_ch, in_ch, kernel, kernel)).astype(np.float32)
    initializers = [numpy_helper.from_array(weight, "w")]
    if bias:
        initializers.append(numpy_helper.from_array(rng.normal(0, 1, out_ch).astype(np.float32), "b"))
    conv = helper.make_node("Conv", ["x", *(i.name for i in initializers)], ["y"], name="conv",
                            kernel_shape=[kernel, kernel], pads=[pads] * 4, strides=[stride, stride])
    graph = helper.make_graph(
        [conv], "one_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_ch, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_ch, "oh", "ow"])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("out_ch", "in_ch", "pads", "bias", "size"),
    [
        (3, 32, 4, False, (36, 44)),  # Engstrom's output conv: zero 'SAME' padding folded into the conv
        (3, 32, 0, True, (44, 52)),  # TransformerNet's: reflection-padded before, so no conv padding
    ],
)
def test_regrouped_conv_computes_the_same(out_ch, in_ch, pads, bias, size):
    model = _conv_model(out_ch, in_ch, 9, pads, bias=bias)
    x = np.random.default_rng(1).uniform(0, 255, (1, in_ch, *size)).astype(np.float32)
    expected = _run(model, x)
    regrouped = onnx.ModelProto()
    regrouped.CopyFrom(model)
    assert regroup_rgb_output_convs(regrouped) == 1
    onnx.checker.check_model(regrouped, full_check=True)
    assert [n.op_type for n in regrouped.graph.node] == ["SpaceToDepth", "Conv", "DepthToSpace"]
    assert [t.name for t in regrouped.graph.initializer] == ["w.blocked", *(["b.blocked"] if bias else [])]
    got = _run(regrouped, x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize(
    ("out_ch", "in_ch", "kernel", "pads", "stride"),
    [(128, 128, 3, 1, 1), (64, 32, 3, 1, 2), (32, 3, 9, 4, 1), (3, 32, 9, 4, 2), (3, 32, 7, 3, 1), (3, 32, 9, 2, 1)],
)
def test_other_convs_are_left_alone(out_ch, in_ch, kernel, pads, stride):
    """Many output channels (the input conv too), a stride, or a window or padding that does
    not fit 4-pixel blocks."""
    model = _conv_model(out_ch, in_ch, kernel, pads, stride=stride)
    before = model.SerializeToString()
    assert regroup_rgb_output_convs(model) == 0
    assert model.SerializeToString() == before


def test_built_styles_carry_the_regrouped_convs(built_store):
    model = onnx.load(str(ONNX_DIR / "udnie.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("SpaceToDepth") == ops.count("DepthToSpace") == 1
