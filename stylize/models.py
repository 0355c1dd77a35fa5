"""Opening a model for the CLI: a built style name, any ``.onnx``, or a ``.pth``.

Every kind is served by ``core.stylizer.Stylizer``, the runtime the server uses, so a
photo painted here and by the server with the same engine gives the same bytes. A ``.onnx``
in this project's layout gets the same measured choice of engine as on the server; the
embeddable ``<style>.uint8.onnx`` and a pytorch/examples ``.pth`` run on their own engine
(ONNX Runtime; PyTorch), since their file is all there is.

A ``.pth`` runs in PyTorch rather than being exported first: exporting takes longer than
painting a typical batch and needs the export toolchain, while the PyTorch network is the
very module the export would trace, so the pixels are the same (to ONNX's 1/255 parity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.engines import Candidate
from core.paths import ONNX_DIR
from core.runtime_choice import RuntimeSettings, SettingError
from core.stylizer import Stylizer, TilingPolicy

#: The styles that need no built ``<style>.onnx`` of their own, as the CLI spells them.
OTHER_STYLES = (
    "one of the 26 Apache-2.0 styles or a blend of them (--style multistyle:SPEC, e.g. multistyle:19 or "
    "multistyle:3:0.5,12:0.5), or any painting as the style (--style-image PAINTING)"
)


class ModelError(RuntimeError):
    """The model cannot be had or run as asked; the message says which file and what to do."""


def load(
    model: str,
    onnx_dir: Path = ONNX_DIR,
    settings: RuntimeSettings | None = None,
    tile: bool | None = None,
) -> Stylizer:
    """A stylizer for a style name or a path to a ``.onnx``/``.pth`` file.

    ``tile``: True forces tiling, and a model that cannot tile fails now, before the batch.
    """
    settings = settings or RuntimeSettings.from_config()
    path = Path(model)
    if path.suffix in (".onnx", ".pth", ".pt"):
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
    else:
        path = style_onnx(model, onnx_dir)
    try:
        policy = TilingPolicy.from_config()
        if path.suffix != ".onnx":
            stylizer = Stylizer(path, settings, policy, engine=TorchEngine(path, settings.threads))
        elif _is_uint8(path):
            stylizer = Stylizer(path, settings, policy, engine=Uint8Engine(path, settings.threads))
        else:
            stylizer = Stylizer(path, settings, policy)
        if tile:
            if isinstance(stylizer.engine, TorchEngine):
                raise ModelError(f"{path}: tiling needs a float ONNX model such as build/onnx/<style>.onnx")
            if isinstance(stylizer.engine, Uint8Engine):
                raise ModelError(f"{path}: tiling needs the float model (<style>.onnx), not the uint8 one")
            stylizer.tiler  # noqa: B018 - built now so a model that cannot tile fails before the batch
    except (SettingError, ValueError) as error:  # a bad setting, or a graph tiling cannot split
        raise ModelError(f"{path}: {error}") from None
    except ModelError:
        raise
    except Exception as error:  # noqa: BLE001 - ORT/OpenVINO/torch raise their own types for bad files
        raise ModelError(f"{path} is not a loadable model ({type(error).__name__}: {error})") from None
    return stylizer


def style_onnx(style: str, onnx_dir: Path = ONNX_DIR) -> Path:
    """The built ONNX file of a named style, or an error that says how to build it."""
    from core.catalogue import DEFAULT_STYLES, STYLES

    if style not in STYLES:
        raise ModelError(
            f"unknown style '{style}'; use one of {', '.join(STYLES)}, give a .onnx/.pth file (--model FILE), "
            f"or {OTHER_STYLES}"
        )
    path = onnx_dir / f"{style}.onnx"
    if not path.is_file():
        build = "scripts/build.sh" if style in DEFAULT_STYLES else f".venv/bin/python -m export build --styles {style}"
        raise ModelError(f"{path} not found: style '{style}' is not built yet; run {build} first")
    return path


def _is_uint8(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


class Uint8Engine:
    """The embeddable ``<style>.uint8.onnx`` (uint8 ``[H, W, 3]`` in and out) behind the
    float batch interface the stylizer speaks."""

    input_names = ("image",)

    def __init__(self, path: Path, threads: int = 0):
        from core.engines import OrtEngine

        self.candidate = Candidate("onnxruntime", "uint8")
        self._engine = OrtEngine(path, self.candidate, threads)
        self._name = self._engine.input_names[0]

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> list[np.ndarray]:
        outputs = []
        for array in feeds["image"]:
            pixels = np.ascontiguousarray(np.clip(np.rint(array), 0, 255).astype(np.uint8).transpose(1, 2, 0))
            out = self._engine.run({self._name: pixels})[0]
            outputs.append(out.transpose(2, 0, 1).astype(np.float32))
        return [np.stack(outputs)]


class TorchEngine:
    """A pytorch/examples ``TransformerNet`` state dict, padded like the exported graphs."""

    input_names = ("image",)

    def __init__(self, path: Path, threads: int = 0):
        import torch

        from networks import SizePreserving, load_pytorch_examples

        if threads:
            torch.set_num_threads(threads)
        try:
            self.net = SizePreserving(load_pytorch_examples(path)).eval()
        except Exception as error:  # noqa: BLE001 - torch.load/load_state_dict raise many types
            raise ModelError(f"{path} is not a TransformerNet state dict ({type(error).__name__}: {error})") from None
        self.candidate = Candidate("pytorch", "fp32")

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            return [self.net(torch.from_numpy(feeds["image"])).numpy()]
