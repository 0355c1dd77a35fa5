"""Build-time half of ``core.tiling``: rewrites a style's ONNX graph into the per-stage
graphs that tiling runs, and saves them as the bundle that ships in the archive.

This is the only tiling code that needs the ``onnx`` package, which serving images need
not have (KServe's adds only ONNX Runtime): the export step runs it, the handler and CLI
only load the bundle (and fall back to building it here when they have ``onnx``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from core.checksums import sha256_of
from core.tiling_program import Program, Schedule, Stage, bundle_path

IN_OP = "InstanceNormalization"
#: Stored tensors (float16) may hold at most this many values per input pixel, e.g. a
#: residual block's input and its layer's input, 128 channels each at 1/4 x 1/4 resolution:
#: 512 MiB at 4096². A pass reads one stored frontier and writes the next.
MAX_STORED_VALUES_PER_PIXEL = 16


def _in_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type == IN_OP]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def probe_shapes(model: onnx.ModelProto, names: Sequence[str], side: int = 64) -> dict[str, tuple[int, ...]]:
    """Shapes of the named tensors for a ``side x side`` input, from one small run."""
    names = list(dict.fromkeys(names))
    probe = _copy(model)
    for name in names:
        probe.graph.node.append(helper.make_node("Shape", [name], [f"_probe_{name}"]))
        probe.graph.output.append(helper.make_tensor_value_info(f"_probe_{name}", TensorProto.INT64, [None]))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {model.graph.input[0].name: np.zeros((1, 3, side, side), np.float32)}
    shapes = session.run([f"_probe_{name}" for name in names], feeds)
    return {name: tuple(int(d) for d in shape) for name, shape in zip(names, shapes, strict=True)}


def with_stats_outputs(model: onnx.ModelProto, strides: Sequence[int]) -> onnx.ModelProto:
    """Adds input ``core`` (int64 ``[y0, x0, y1, x1]`` in the tile's input pixels) and, per
    IN layer ``k``, outputs ``seen_mean_k`` / ``seen_var_k``: its input's per-channel mean
    and population variance over the core only (the margin is there to be thrown away)."""
    model = _copy(model)
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("core", TensorProto.INT64, [4]))
    graph.initializer.extend(
        [
            helper.make_tensor("_stats_axes", TensorProto.INT64, [3], [0, 2, 3]),
            helper.make_tensor("_hw_axes", TensorProto.INT64, [2], [2, 3]),
            helper.make_tensor("_flat", TensorProto.INT64, [1], [-1]),
            *(helper.make_tensor(f"_at{i}", TensorProto.INT64, [1], [i]) for i in (0, 2, 4)),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Slice", ["core", "_at0", "_at2"], ["_core_start"]),
            helper.make_node("Slice", ["core", "_at2", "_at4"], ["_core_end"]),
        ]
    )
    for k, (node, stride) in enumerate(zip(_in_nodes(model), strides, strict=True)):
        p = f"_st{k}_"
        graph.initializer.append(helper.make_tensor(p + "stride", TensorProto.INT64, [1], [stride]))
        graph.node.extend(
            [
                helper.make_node("Div", ["_core_start", p + "stride"], [p + "start"]),
                helper.make_node("Div", ["_core_end", p + "stride"], [p + "end"]),
                helper.make_node("Slice", [node.input[0], p + "start", p + "end", "_hw_axes"], [p + "x"]),
                helper.make_node("ReduceMean", [p + "x", "_stats_axes"], [p + "m"], keepdims=1),
                helper.make_node("Sub", [p + "x", p + "m"], [p + "d"]),
                helper.make_node("Mul", [p + "d", p + "d"], [p + "d2"]),
                helper.make_node("ReduceMean", [p + "d2", "_stats_axes"], [f"seen_var_{k}"], keepdims=0),
                helper.make_node("Reshape", [p + "m", "_flat"], [f"seen_mean_{k}"]),
            ]
        )
        for name in (f"seen_mean_{k}", f"seen_var_{k}"):
            graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]))
    return model


def with_fixed_stats(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each IN layer ``k`` becomes the affine map ``x * a + b`` with
    ``a = scale / sqrt(var_k + eps)`` and ``b = shift - mean_k * a``; ``mean_k`` and
    ``var_k`` become graph inputs: the global statistics, the same for every tile."""
    model = _copy(model)
    graph = model.graph
    graph.initializer.append(helper.make_tensor("_bcast", TensorProto.INT64, [4], [1, -1, 1, 1]))
    nodes = []
    k = 0
    for node in graph.node:
        if node.op_type != IN_OP:
            nodes.append(node)
            continue
        x, scale, shift = node.input
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        p = f"_in{k}_"
        graph.initializer.append(helper.make_tensor(p + "eps", TensorProto.FLOAT, [], [epsilon]))
        nodes += [
            helper.make_node("Add", [f"var_{k}", p + "eps"], [p + "ve"]),
            helper.make_node("Sqrt", [p + "ve"], [p + "sd"]),
            helper.make_node("Div", [scale, p + "sd"], [p + "a"]),
            helper.make_node("Mul", [f"mean_{k}", p + "a"], [p + "ma"]),
            helper.make_node("Sub", [shift, p + "ma"], [p + "b"]),
            helper.make_node("Reshape", [p + "a", "_bcast"], [p + "a4"]),
            helper.make_node("Reshape", [p + "b", "_bcast"], [p + "b4"]),
            helper.make_node("Mul", [x, p + "a4"], [p + "xa"]),
            helper.make_node("Add", [p + "xa", p + "b4"], list(node.output)),
        ]
        for name in (f"mean_{k}", f"var_{k}"):
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]))
        k += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def extract(model: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str]) -> onnx.ModelProto:
    """The sub-graph computing ``outputs`` from ``inputs`` (and initializers); only the
    inputs it actually uses are kept. (``onnx.utils.Extractor`` wants shape information
    for every cut tensor, which the rewritten graphs do not carry.)"""
    graph = model.graph
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    stop = set(inputs)
    needed: set[int] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in stop or name not in producer or producer[name] in needed:
            continue
        needed.add(producer[name])
        stack += [n for n in graph.node[producer[name]].input if n]
    nodes = [graph.node[i] for i in sorted(needed)]
    used = {name for node in nodes for name in node.input}
    types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    new_graph = helper.make_graph(
        nodes,
        f"{graph.name}_part",
        [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), _shape(n)) for n in inputs if n in used],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, _shape(n)) for n in outputs],
        [init for init in graph.initializer if init.name in used],
    )
    return helper.make_model(new_graph, opset_imports=model.opset_import, ir_version=model.ir_version)


def _shape(name: str) -> list[None] | list[int]:
    """A cut tensor's shape, as far as it is known: statistics are vectors, ``core`` is the
    tile's box, everything else an image-like ``[N, C, H, W]``. Declaring the rank lets
    every backend read the stage graphs (OpenVINO refuses inputs of unknown rank)."""
    if name.startswith(("mean_", "var_", "seen_mean_", "seen_var_")):
        return [None]
    return [4] if name == "core" else [None, None, None, None]


def schedule(model: onnx.ModelProto, budget: float = MAX_STORED_VALUES_PER_PIXEL) -> Schedule:
    """Plans the passes for ``model``.

    Before each IN layer, the *frontier* is the set of tensors computed so far that are
    still needed (for a residual block: the block input and the layer's own input).
    When a frontier costs at most ``budget`` values per input pixel, one pass computes
    and stores what of it is new, pooling the layer's statistics on the way; otherwise
    (the 32-channel full-resolution layers) a statistics-only pass runs from the last
    stored frontier up to the layer's input. Every stage has all the statistics it needs:
    those of the layers before it. Shape computations (which read the image's size, not
    its pixels) do not count as data.
    """
    graph = model.graph
    image, output = graph.input[0].name, graph.output[0].name
    produced = {image: -1}
    last_use = {output: len(graph.node)}
    for i, node in enumerate(graph.node):
        if node.op_type != "Shape" and any(name in produced for name in node.input):
            produced.update((name, i) for name in node.output)
    for i, node in enumerate(graph.node):
        if node.op_type != "Shape":
            last_use.update((name, i) for name in node.input if name in produced)
    in_at = [i for i, node in enumerate(graph.node) if node.op_type == IN_OP]
    frontiers = [tuple(t for t, p in produced.items() if p < i <= last_use.get(t, -1)) for i in in_at]
    layer_inputs = [graph.node[i].input[0] for i in in_at]
    probe_side = 64
    shapes = probe_shapes(model, [t for t in {*layer_inputs, *(t for f in frontiers for t in f)} if t != image])
    strides = {t: probe_side // shape[2] for t, shape in shapes.items() if probe_side % shape[2] == 0}
    strides[image] = 1

    def cost(frontier: tuple[str, ...]) -> float:
        if any(t not in strides for t in frontier):  # e.g. a padded tensor: not on the grid
            return float("inf")
        return sum((3 if t == image else shapes[t][1]) / strides[t] ** 2 for t in frontier)

    stages: list[Stage] = []
    stored: tuple[str, ...] = (image,)
    done: set[int] = set()  # layers whose statistics an earlier stage pools
    for k, frontier in enumerate(frontiers):
        if cost(frontier) <= budget:
            if new := tuple(t for t in frontier if t not in stored):
                layers = tuple(j for j, t in enumerate(layer_inputs) if t in new and j not in done)
                stages.append(Stage(stored, new, layers))
                done.update(layers)
            stored = frontier
        if k not in done:
            stages.append(Stage(stored, (), (k,)))
            done.add(k)
    stages.append(Stage(stored, (output,)))
    strides[output] = 1
    return Schedule(stages, layer_inputs, strides, image, output)


def compile_program(model: onnx.ModelProto, model_sha256: str) -> Program:
    """The schedule and, per stage, the sub-graph it runs: the network with every IN layer
    taking its statistics as inputs (``with_fixed_stats``), from the stage's stored tensors
    to its targets and the statistics of its layers (``with_stats_outputs``).

    Float32 graphs only: the rewrites feed statistics as float32, so a graph computing in
    float16 (the GPU variant ``<style>.fp16.onnx``) is refused with a clear message."""
    initializers = {init.name: init.data_type for init in model.graph.initializer}
    for node in _in_nodes(model):
        if initializers.get(node.input[1], TensorProto.FLOAT) != TensorProto.FLOAT:
            kind = TensorProto.DataType.Name(initializers[node.input[1]]).lower()
            raise ValueError(f"tiling runs float32 graphs only, and this one computes in {kind} "
                             "(the GPU variant?): tile the float model <style>.onnx, or run whole images")
    plan = schedule(model)
    graph = with_fixed_stats(with_stats_outputs(model, [plan.strides[t] for t in plan.layer_inputs]))
    stats_inputs = [f"{kind}_{k}" for k in range(len(plan.layer_inputs)) for kind in ("mean", "var")]
    graphs = []
    for stage in plan.stages:
        outputs = [*stage.targets, *(f"seen_{kind}_{k}" for k in stage.layers for kind in ("mean", "var"))]
        inputs = list(dict.fromkeys([*stage.sources, plan.image, "core", *stats_inputs]))
        part = extract(graph, inputs, outputs)
        stored = {*stage.sources, *stage.targets} - {plan.image, plan.output}
        graphs.append(with_float16_io(part, stored).SerializeToString())
    return Program(plan, graphs, model_sha256)


def with_float16_io(model: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """Makes the named graph inputs and outputs float16, cast inside the graph: stored
    tensors are kept in float16, and converting them inside the graph uses ONNX Runtime's
    threaded, vectorised casts instead of numpy's single-threaded ones, a sizeable share of
    a stage's time on large images."""
    graph = model.graph
    inside = {name: f"{name}_f32" for name in names}
    for node in graph.node:
        node.input[:] = [inside.get(n, n) for n in node.input]
        node.output[:] = [inside.get(n, n) for n in node.output]
    casts_in = [helper.make_node("Cast", [v.name], [inside[v.name]], to=TensorProto.FLOAT)
                for v in graph.input if v.name in names]
    casts_out = [helper.make_node("Cast", [inside[v.name]], [v.name], to=TensorProto.FLOAT16)
                 for v in graph.output if v.name in names]
    for value in [*graph.input, *graph.output]:
        if value.name in names:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    nodes = [*casts_in, *graph.node, *casts_out]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def compile_file(model_path: str | os.PathLike) -> Program:
    return compile_program(onnx.load(os.fspath(model_path)), sha256_of(model_path))


def write_bundle(model_path: str | os.PathLike) -> Path:
    """Compiles the ``.onnx`` at ``model_path`` into the bundle beside it (see
    ``core.tiling_program.Program``), which the archive then carries."""
    path = bundle_path(model_path)
    compile_file(model_path).save(path)
    return path
