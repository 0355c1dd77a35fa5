"""``python -m export``: weights -> checked ONNX files -> TorchServe archives.

    python -m export build [--styles la_muse wave ...] [--mirror ../shared/weights]
    python -m export fetch --styles candy --mirror DIR
    python -m export list

``build`` skips a style whose archive is already up to date with its weights and the code
that makes it, so running it again (as the test command does) costs seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import yaml

from export import weights
from export.archive import ROOT, package
from export.onnx_export import default_parity_photo, export_style

MODEL_STORE = ROOT / "model_store"
ONNX_DIR = ROOT / "build" / "onnx"
#: Code whose change must rebuild every archive.
SOURCES = ["core", "export", "handlers/fast_style.py"]

#: TorchServe settings for each fast-style model (written as the archive's model config).
FAST_MODEL_CONFIG = {
    "minWorkers": 1,
    "maxWorkers": 1,
    # Batching: requests that arrive within 20 ms share one call (images of one size batch).
    "batchSize": 4,
    "maxBatchDelay": 20,
    # A 16-megapixel image takes about a minute on 2 CPU cores; beyond the timeout
    # TorchServe kills the worker, so the handler's pixel limit keeps requests under it.
    "responseTimeout": 300,
    "handler": {
        "max_input_pixels": 64_000_000,
        "max_pixels": 4096 * 4096,
        "intra_op_threads": 0,  # 0 = half the cores, so two busy workers share them
    },
}


def fingerprint(style: weights.Style, weights_path: Path) -> str:
    """Hash of everything an archive is made from: weights, code, settings."""
    digest = hashlib.sha256(json.dumps(FAST_MODEL_CONFIG, sort_keys=True).encode())
    files = sorted(weights_path.rglob("*")) if weights_path.is_dir() else [weights_path]
    for source in SOURCES:
        path = ROOT / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for file in files:
        if file.is_file():
            digest.update(file.name.encode() + weights.sha256_of(file).encode())
    return digest.hexdigest()


def build_style(name: str, mirror: Path | None, photo: Path, store: Path) -> str:
    style = weights.STYLES[name]
    weights_path = weights.fetch(name, mirror=mirror)
    stamp = ONNX_DIR / f"{name}.fingerprint"
    key = fingerprint(style, weights_path)
    archive = store / f"{name}.mar"
    if archive.exists() and stamp.exists() and stamp.read_text() == key:
        return "up to date"
    started = time.perf_counter()
    net = weights.load_network(name, mirror=mirror)
    metadata = {"style": name, "family": style.family, "licence": style.licence}
    report = export_style(net, ONNX_DIR, name, metadata, photo)
    config = ONNX_DIR / f"{name}.model-config.yaml"
    config.write_text(yaml.safe_dump(FAST_MODEL_CONFIG, sort_keys=False))
    package(name, ROOT / "handlers" / "fast_style.py", ONNX_DIR / f"{name}.onnx", [], config, store)
    stamp.write_text(key)
    return (
        f"built in {time.perf_counter() - started:.0f}s, ONNX vs PyTorch max |diff| "
        f"{report['max_abs_diff_float']:.4f} (float), {report['max_abs_diff_uint8']:.0f} (uint8)"
    )


def build_gatys(store: Path) -> str:
    try:
        from optimize import archive as gatys_archive
    except ImportError as error:
        return f"skipped ({error})"
    gatys_archive.build(store)
    return "built"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "fetch", "list"])
    parser.add_argument("--styles", nargs="+", default=list(weights.DEFAULT_STYLES))
    parser.add_argument("--mirror", type=Path, help="local folder laid out like the weights cache")
    parser.add_argument("--store", type=Path, default=MODEL_STORE, help="where .mar archives go")
    parser.add_argument("--parity-photo", type=Path, help="real photo for the ONNX parity check")
    parser.add_argument("--no-gatys", action="store_true", help="do not build the gatys archive")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, style in weights.STYLES.items():
            default = " (default)" if name in weights.DEFAULT_STYLES else ""
            print(f"{name:18} {style.family}{default}")
        return 0
    try:
        for name in args.styles:
            if args.command == "fetch":
                print(f"{name}: {weights.fetch(name, mirror=args.mirror)}")
            else:
                photo = args.parity_photo or default_parity_photo()
                print(f"{name}: {build_style(name, args.mirror, photo, args.store)}", flush=True)
    except weights.WeightsUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "build" and not args.no_gatys:
        print(f"gatys: {build_gatys(args.store)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
