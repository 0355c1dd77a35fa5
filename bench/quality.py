"""Image-quality cases of the benchmark: what a faster way of running the network costs in pixels.

Each function runs in its own process (``bench.isolated``) and compares against the ORT fp32
output on the real content photos (``core.photos.content_photos``), on the 0..255 scale.

* ``variants`` – the reduced-precision files ``<style>.int8.onnx`` / ``<style>.fp16.onnx``
  that ``python -m export build`` writes (``export.quantize``).
* ``tiled_or_whole`` – large images in tiles (``core.tiling``): time, peak memory, and the
  tiled output against the whole-image one.
"""

from __future__ import annotations

import resource
import time

from bench.model_speed import onnx_path
from core import codec
from core.photos import content_photos, photo

#: Variant name in the results -> ``bench.model_speed`` kind of its ONNX file.
VARIANT_KINDS = {"int8": "ort_int8", "fp16": "ort_fp16"}


def variants(style: str, side: int) -> dict:
    """PSNR (mean and worst photo) and largest pixel difference of each variant against fp32,
    on ``side``-px square crops of every content photo."""
    from export.quantize import compare

    photos = content_photos()
    variants = {name: onnx_path(style, kind) for name, kind in VARIANT_KINDS.items()}
    for path in variants.values():
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run scripts/build.sh (without --no-variants) first")
    # one fp32 run per photo for all variants
    return {"photos": len(photos), "side": side, **compare(onnx_path(style, "ort_fp32"), variants, photos, side)}


def tiled_or_whole(style: str, side: int, tiled: bool, threads: int) -> dict:
    """Stylizes a ``side x side`` real photo tiled (``core.tiling``) or in one call, timing
    the call alone (sessions are made before the clock starts) and reading the peak RSS
    right after it: run it in a fresh process, so the peak is this case's own.

    Only then, for a tiled run of at most 2048², the whole-image output is made for
    ``psnr_vs_whole_db``: whole at 4096² needs several times the memory tiling is there to
    save (``None`` then, and for whole-image runs).
    """
    import onnxruntime as ort

    from core.onnx_session import session_options
    from core.tiling import TiledStylizer
    from export.quantize import psnr_db

    path = onnx_path(style, "ort_fp32")
    x = codec.to_array(photo(side, side))

    def whole():
        session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
        return lambda image: session.run(None, {session.get_inputs()[0].name: image[None]})[0][0]

    run = TiledStylizer(path, threads=threads) if tiled else whole()
    started = time.perf_counter()
    output = run(x)
    seconds = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    psnr = None
    if tiled and side <= 2048:
        psnr = round(psnr_db(whole()(x), output), 2)  # psnr_db compares them as delivered
    return {"side": side, "tiled": tiled, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb, 1),
            "psnr_vs_whole_db": psnr}
