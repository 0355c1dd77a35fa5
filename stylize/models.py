"""Loading a style network for the CLI: a built default style, any ``.onnx``, or a ``.pth``.

A ``.pth`` runs in PyTorch rather than being exported first: exporting takes longer than
painting a typical batch and needs the export toolchain, while the PyTorch network is the
very module the export would trace, so the pixels are the same (to ONNX's 1/255 parity).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ONNX_DIR = ROOT / "build" / "onnx"

#: ``float32 [3, H, W]`` in 0..255 -> the same layout, stylized.
Runner = Callable[[np.ndarray], np.ndarray]


class ModelError(RuntimeError):
    """The model cannot be had or run as asked; the message says which file and what to do."""


def load(
    model: str, onnx_dir: Path = DEFAULT_ONNX_DIR, threads: int = 0, tile: bool | None = None
) -> tuple[str, Runner]:
    """Returns ``(label, runner)`` for a style name or a path to a ``.onnx``/``.pth`` file.

    ``tile``: True/False forces tiled/whole-image runs, None tiles above the serving
    threshold (``core.tiling.threshold``), as the handler does. Only float ONNX models tile.
    """
    path = Path(model)
    if path.suffix in (".onnx", ".pth", ".pt"):
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        if path.suffix != ".onnx" and tile:
            raise ModelError(f"{path}: tiling needs a float ONNX model such as build/onnx/<style>.onnx")
        runner = onnx_runner(path, threads, tile) if path.suffix == ".onnx" else pytorch_runner(path, threads)
        return path.name, runner
    return model, onnx_runner(style_onnx(model, onnx_dir), threads, tile)


def style_onnx(style: str, onnx_dir: Path = DEFAULT_ONNX_DIR) -> Path:
    """The built ONNX file of a named style, or an error that says how to build it."""
    from export.weights import DEFAULT_STYLES, STYLES

    if style not in STYLES:
        raise ModelError(
            f"unknown style '{style}'; use one of {', '.join(STYLES)} or give a .onnx/.pth file"
        )
    path = onnx_dir / f"{style}.onnx"
    if not path.is_file():
        build = "scripts/build.sh" if style in DEFAULT_STYLES else f".venv/bin/python -m export build --styles {style}"
        raise ModelError(f"{path} not found: style '{style}' is not built yet; run {build} first")
    return path


def onnx_runner(path: Path, threads: int = 0, tile: bool | None = None) -> Runner:
    """ONNX Runtime with the handler's session settings; float NCHW or uint8 HWC models.
    Float models run large images tiled (see ``load``)."""
    import onnxruntime as ort

    from core import tiling
    from stylize.shared import providers, session_options

    threads = threads or os.cpu_count() or 1
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=providers(None))
    except Exception as error:  # noqa: BLE001 - ORT raises its own types for bad files
        raise ModelError(f"{path} is not a loadable ONNX model ({error})") from None
    spec = session.get_inputs()[0]
    if spec.type == "tensor(uint8)":  # the embeddable <style>.uint8.onnx: HWC in and out
        if tile:
            raise ModelError(f"{path}: tiling needs the float model (<style>.onnx), not the uint8 one")

        def run_uint8(array: np.ndarray) -> np.ndarray:
            pixels = np.ascontiguousarray(np.clip(np.rint(array), 0, 255).astype(np.uint8).transpose(1, 2, 0))
            return session.run(None, {spec.name: pixels})[0].transpose(2, 0, 1).astype(np.float32)

        return run_uint8

    @functools.cache
    def tiler() -> tiling.TiledStylizer:
        """Built on the first large image only (or at once when tiling is forced)."""
        return tiling.TiledStylizer(path, threads=threads)

    try:
        limit = tiling.threshold()
        if tile:  # forced: a model that cannot tile fails now, before the batch starts
            tiler()
    except ValueError as error:  # a malformed $STYLE_TILE_THRESHOLD, or a graph tiling cannot split
        raise ModelError(f"{path}: {error}") from None

    def run_float(array: np.ndarray) -> np.ndarray:
        if tiling.wants_tiles(array.shape[1], array.shape[2], tile, limit):
            return tiler()(array)
        return session.run(None, {spec.name: array[None]})[0][0]

    return run_float


def pytorch_runner(path: Path, threads: int = 0) -> Runner:
    """A pytorch/examples ``TransformerNet`` state dict, padded like the exported graphs."""
    import torch

    from export.networks import SizePreserving
    from export.weights import load_pytorch_examples

    if threads:
        torch.set_num_threads(threads)
    try:
        net = SizePreserving(load_pytorch_examples(path)).eval()
    except Exception as error:  # noqa: BLE001 - torch.load/load_state_dict raise many types
        raise ModelError(f"{path} is not a TransformerNet state dict ({type(error).__name__}: {error})") from None

    def run(array: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(array)[None])[0].numpy()

    return run
