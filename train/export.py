"""Trained weights -> checked ONNX -> TorchServe ``.mar``, in one call.

The same path the bundled styles take (``export.onnx_export.export_style``, the ONNX
Runtime parity check included, then ``build_tools.archive.package`` with the fast-style
handler and ``FAST_MODEL_CONFIG``); only the weights come from a training run.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from build_tools.archive import package
from core.paths import MODEL_STORE, ONNX_DIR, ROOT
from core.photos import default_parity_photo
from export.models import FAST_MODEL_CONFIG
from export.onnx_export import export_style
from networks import load_pytorch_examples

#: TorchServe model names (and this project's allowed_urls pattern) admit only these.
NAME = re.compile(r"^[A-Za-z0-9_-]+$")
DEFAULT_LICENCE = "Trained with this project's `python -m train`; the licence of the style image and dataset applies."


def export_checkpoint(
    weights: Path,
    name: str,
    store: Path = MODEL_STORE,
    onnx_dir: Path = ONNX_DIR,
    photo: Path | None = None,
    licence: str = DEFAULT_LICENCE,
) -> tuple[Path, dict]:
    """Exports a trained ``TransformerNet`` state_dict (``<save-dir>/<name>.pth``) as style
    ``name``: writes ``onnx_dir/<name>.onnx`` (+ ``.uint8.onnx``, ``.pt2``) and
    ``store/<name>.mar``. Returns the archive and the ONNX-vs-PyTorch parity report."""
    if not NAME.match(name):
        raise ValueError(f"style name {name!r} must match {NAME.pattern} (it becomes a URL path and a file name)")
    net = load_pytorch_examples(Path(weights))
    metadata = {"style": name, "family": "pytorch_examples", "licence": licence, "trained_from": Path(weights).name}
    report = export_style(net, Path(onnx_dir), name, metadata, photo or default_parity_photo())
    config = Path(onnx_dir) / f"{name}.model-config.yaml"
    config.write_text(yaml.safe_dump(FAST_MODEL_CONFIG, sort_keys=False))
    archive = package(name, ROOT / "handlers" / "fast_style.py", Path(onnx_dir) / f"{name}.onnx", [], config,
                      Path(store))
    return archive, report
