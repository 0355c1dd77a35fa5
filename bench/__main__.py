"""``python -m bench``: the whole benchmark in one run, written to ``bench/results/``.

    .venv/bin/python -m bench                 # full run (long on 2 cores: README, "Performance")
    .venv/bin/python -m bench --quick         # small sizes, 2 runs: checks the machinery

Everything is measured in the same run on the same machine, and the report leads with
ratios (to this machine's matmul rate, to fp32, to the bare model), which carry over
between machines where absolute times do not. Needs the built models
(``scripts/build.sh``); the Gatys part needs ``../shared/images`` beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import onnxruntime
import torch

from bench import isolated, report
from bench.model_speed import KINDS, ORT_VARIANTS, network_flops, onnx_path, unavailable
from core import cpu, engines
from core.paths import BENCH_RESULTS

SIZES = [(256, 256), (512, 512), (680, 1024), (2048, 2048)]
QUICK_SIZES = [(128, 128), (192, 256)]
#: A case whose projected time (previous size's median scaled by pixels, times warm-up plus
#: runs) exceeds this is skipped and reported as skipped, not silently dropped.
CASE_BUDGET_S = 420


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    ov = engines.openvino_core()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "openvino": __import__("openvino").__version__ if ov else None,
            "cpu_flags": {flag: flag in cpu.cpu_flags() for flag in
                          ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")},
            "openvino_cpu_capabilities": ov.get_property("CPU", "OPTIMIZATION_CAPABILITIES") if ov else None,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def model_cases(style: str, sizes: list[tuple[int, int]], runs: int, threads: int,
                kinds: list[str] = KINDS) -> list[dict]:
    rows: list[dict] = []
    for kind in kinds:
        previous: dict | None = None
        for height, width in sizes:
            row = {"kind": kind, "height": height, "width": width,
                   "flops": network_flops(style, height, width)}
            if kind in ORT_VARIANTS and unavailable(kind):
                row["skipped"] = unavailable(kind)
            elif kind in ORT_VARIANTS and not onnx_path(style, kind).exists():
                row["skipped"] = f"{onnx_path(style, kind).name} not built"
            elif previous and "median_s" in previous:
                projected = previous["median_s"] * row["flops"] / previous["flops"] * (runs + 1)
                if projected > CASE_BUDGET_S:
                    row["skipped"] = f"projected {projected:.0f}s for {runs + 1} calls exceeds {CASE_BUDGET_S}s"
            if "skipped" not in row:
                row.update(isolated.run("bench.model_speed:time_network", kind=kind, style=style, height=height,
                                        width=width, runs=runs, threads=threads))
            print(f"  {kind:14} {width}x{height}: {report.brief(row)}", flush=True)
            rows.append(row)
            previous = row
    return rows


def higher_rate(first: dict, second: dict) -> dict:
    """The yardstick is the higher of a matmul measurement before and one after the model
    cases: a busy moment on the machine can only lower a measurement, and a lowered
    yardstick would flatter every ratio reported against it."""
    best = max(first, second, key=lambda m: m["gflops"])
    return {**best, "gflops_measured": [first["gflops"], second["gflops"]]}


#: How a carried bare-network section is named in the report.
CARRIED_MODELS = "models and its matmul yardstick"


def keep_previous(results: dict, path: Path, skipped: list[str], kinds: list[str]) -> None:
    """Fills sections this run skipped (and bare-network paths it did not time) from the
    previous results file, each marked with the date it was measured, so a partial re-run
    still reports the whole picture without passing old figures off as new."""
    if not path.exists():
        return
    previous = json.loads(path.read_text())
    date = previous.get("machine", {}).get("date", "an earlier run")
    # What the previous run itself carried keeps the date it was really measured.
    earlier = report.carried_dates(previous)
    dates = {}
    for section in skipped:
        if section in previous and section != "models":
            results[section] = previous[section]
            dates[section] = earlier.get(section, date)
    if "models" in skipped and previous.get("models"):
        # The bare-network rows are reported as fractions of the matmul rate measured in
        # their own run: they travel together, or every "of matmul" figure would be wrong.
        results["models"], results["matmul"] = previous["models"], previous["matmul"]
        results["runs"] = previous.get("runs", results.get("runs"))
        dates[CARRIED_MODELS] = earlier.get(CARRIED_MODELS, date)
    old_rows = [r for r in previous.get("models", []) if r["kind"] not in kinds]
    if old_rows and "models" in results:
        results["models"] += [{"from_run": date, **r} for r in old_rows]
        for row in old_rows:
            dates[f"models: {row['kind']}"] = row.get("from_run", date)
    if dates:
        results["carried_over"] = {"dates": dates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--style", default="udnie", help="a built style (all share one architecture family)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case, after one warm-up")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 runs: a smoke test")
    parser.add_argument("--out", type=Path, default=BENCH_RESULTS)
    parser.add_argument("--serving-runs", type=int, default=8, help="requests per client per served case")
    parser.add_argument("--keep-previous", action="store_true",
                        help="fill skipped sections from the previous results.json (marked with their date)")
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS, help="bare-network paths to time")
    parser.add_argument("--skip", nargs="*", default=[], choices=["models", "quality", "highres", "serving", "gatys"])
    args = parser.parse_args(argv)
    if not onnx_path(args.style, "ort_fp32").exists():
        print(f"error: {onnx_path(args.style, 'ort_fp32')} missing: run scripts/build.sh first", file=sys.stderr)
        return 2
    runs = 2 if args.quick else args.runs
    sizes = QUICK_SIZES if args.quick else SIZES
    threads = os.cpu_count() or 1
    results: dict = {"machine": machine(), "style": args.style, "runs": runs, "threads": threads, "quick": args.quick}

    print("matmul yardstick", flush=True)
    thread_counts = sorted({threads, max(1, threads // 2)})
    before = {t: isolated.run("bench.model_speed:matmul_gflops", threads=t) for t in thread_counts}
    if "models" not in args.skip:
        print("fast path, bare network", flush=True)
        results["models"] = model_cases(args.style, sizes, runs, threads, args.kinds)
    print("matmul yardstick, again", flush=True)
    results["matmul"] = {str(t): higher_rate(before[t], isolated.run("bench.model_speed:matmul_gflops", threads=t))
                         for t in thread_counts}
    if "quality" not in args.skip:
        print("reduced-precision quality", flush=True)
        results["quality"] = isolated.run("bench.quality:variants", style=args.style, side=128 if args.quick else 512)
    if "highres" not in args.skip:
        print("high resolution: tiled vs whole image", flush=True)
        results["highres"] = [
            isolated.run("bench.quality:tiled_or_whole", style=args.style, side=side, tiled=tiled, threads=threads)
            for side in ([512] if args.quick else [2048, 4096]) for tiled in (False, True)
        ]
    if "serving" not in args.skip:
        print("end to end through TorchServe", flush=True)
        from bench.serving import all_models_rss, end_to_end

        try:  # a server that fails must not cost the figures measured before it
            results["serving"] = end_to_end(args.style, sizes[-2:] if args.quick else [(512, 512), (680, 1024)],
                                            runs=2 if args.quick else args.serving_runs, concurrency=[1, 4])
            results["serving"]["all_models"] = all_models_rss()
        except Exception as error:  # noqa: BLE001 - reported in the results and the report
            results["serving"] = {"error": f"{type(error).__name__}: {error}"}
    if "gatys" not in args.skip:
        print("gatys path", flush=True)
        results["gatys"] = isolated.run(
            "bench.gatys_speed:measure", sides=[64, 96] if args.quick else [256, 512],
            iterations=2 if args.quick else 5, ctf_side=64 if args.quick else 256,
            ctf_iterations=4 if args.quick else 20, scales=2, threads=threads)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.keep_previous:
        keep_previous(results, args.out / "results.json", args.skip, args.kinds)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    report.write(results, args.out)
    print(f"wrote {args.out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
