"""What tiling a model takes, as data: its passes (``Schedule``), the ONNX graph each pass runs,
and the bundle file they are saved in beside the model (``Program``).

Both halves of tiling speak it: ``core.tiling_graphs`` (build time, needs ``onnx``) makes a
program from a model, ``core.tiling`` (serving, ONNX Runtime only) loads and runs one. It
lives apart from both so that neither half imports the other for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bundle file beside ``<name>.onnx`` (see ``Program``), and its format's version.
BUNDLE_SUFFIX = ".tiling.npz"
BUNDLE_VERSION = 3


@dataclass(frozen=True)
class Stage:
    """One pass over the image, tile by tile: reads the stored tensors ``sources``, stores
    the tensors ``targets`` (float16, but the final output), and pools the statistics of
    the IN ``layers`` whose inputs it computes."""

    sources: tuple[str, ...]
    targets: tuple[str, ...] = ()
    layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """The passes that stylize an image, and what they need to know about tensors."""

    stages: list[Stage]
    layer_inputs: list[str]  # IN layer k's input tensor
    strides: dict[str, int]  # downsampling of stored tensors and IN layer inputs
    image: str  # the graph's input and output names
    output: str


@dataclass(frozen=True)
class Program:
    """A schedule and, per stage, the serialized ONNX graph it runs. Saved as a ``.npz``
    bundle beside the model, so serving needs ONNX Runtime and numpy only;
    ``model_sha256`` ties it to its model."""

    schedule: Schedule
    graphs: list[bytes]
    model_sha256: str

    def save(self, path: str | os.PathLike) -> None:
        plan = self.schedule
        header = {
            "version": BUNDLE_VERSION,
            "model_sha256": self.model_sha256,
            "stages": [[list(s.sources), list(s.targets), list(s.layers)] for s in plan.stages],
            "layer_inputs": plan.layer_inputs, "strides": plan.strides, "image": plan.image, "output": plan.output,
        }  # fmt: skip
        graphs = {f"graph_{i}": np.frombuffer(g, np.uint8) for i, g in enumerate(self.graphs)}
        with open(path, "wb") as file:  # np.savez would append ".npz" to other names
            np.savez(file, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **graphs)

    @staticmethod
    def read_header(path: str | os.PathLike) -> dict:
        with np.load(path, allow_pickle=False) as bundle:
            return json.loads(bundle["header"].tobytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Program:
        with np.load(path, allow_pickle=False) as bundle:
            header = json.loads(bundle["header"].tobytes())
            if header.get("version") != BUNDLE_VERSION:
                raise ValueError(f"{path}: tiling bundle version {header.get('version')}, expected {BUNDLE_VERSION}")
            stages = [Stage(tuple(src), tuple(dst), tuple(layers)) for src, dst, layers in header["stages"]]
            graphs = [bundle[f"graph_{i}"].tobytes() for i in range(len(stages))]
        plan = Schedule(stages, header["layer_inputs"], header["strides"], header["image"], header["output"])
        return cls(plan, graphs, header["model_sha256"])


def bundle_path(model_path: str | os.PathLike) -> Path:
    """Where a model's tiling bundle lives: ``<name>.onnx`` -> ``<name>.tiling.npz``."""
    path = Path(model_path)
    return path.with_name(path.name.removesuffix(".onnx") + BUNDLE_SUFFIX)
