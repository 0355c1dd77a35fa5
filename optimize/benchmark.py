"""``python -m optimize.benchmark``: seconds per iteration, and whether coarse-to-fine pays off.

Uses random VGG19 weights unless ``--real-weights``: per-iteration cost depends only on the
architecture, but the coarse-to-fine comparison is about the loss landscape, so rerun it with
the ImageNet weights before drawing conclusions about real images.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from PIL import Image

from optimize.transfer import Settings, stylize
from optimize.vgg import load_vgg19_features, random_vgg19_features

#: Real photos beside the checkout (``../shared/images``, as in CI).
IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"


def seconds_per_iteration(features, content, style, side: int, optimizer: str, iterations: int) -> float:
    """Median wall time of one iteration (the first, with its warm-up, excluded)."""
    settings = Settings(iterations=iterations + 1, max_side=side, optimizer=optimizer, seed=0)
    result = stylize(content.resize((side, side)), [style], settings, features)
    stamps = [row["elapsed"] for row in result.history]
    steps = sorted(b - a for a, b in itertools.pairwise(stamps))
    return steps[len(steps) // 2]


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


def coarse_to_fine(features, content, style, side: int, iterations: int, scales: int) -> dict:
    """Targets: the losses single-scale L-BFGS reaches after 1/4, 1/2, 3/4 and all of
    ``iterations``. Seconds each run needs to reach them (None: not reached)."""
    single = stylize(content, [style], Settings(iterations=iterations, max_side=side, seed=0), features)
    multi = stylize(content, [style], Settings(iterations=iterations, max_side=side, seed=0, scales=scales),
                    features)
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m optimize.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--ctf-side", type=int, default=256)
    parser.add_argument("--ctf-iterations", type=int, default=20)
    parser.add_argument("--scales", type=int, default=3)
    parser.add_argument("--real-weights", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (the server uses half the cores)")
    parser.add_argument("--no-coarse-to-fine", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    features = load_vgg19_features() if args.real_weights else random_vgg19_features(0)
    content = Image.open(IMAGES / "content/face.jpg").convert("RGB")
    style = Image.open(IMAGES / "styles/wave.jpg").convert("RGB")
    report = {"threads": torch.get_num_threads(), "seconds_per_iteration": {}}
    for side in args.sides:
        for optimizer in ("lbfgs", "adam"):
            seconds = seconds_per_iteration(features, content, style, side, optimizer, args.iterations)
            report["seconds_per_iteration"][f"{side}px_{optimizer}"] = round(seconds, 3)
            print(side, optimizer, round(seconds, 3), flush=True)
    if args.no_coarse_to_fine:
        print(json.dumps(report, indent=2))
        return
    started = time.monotonic()
    report["coarse_to_fine"] = coarse_to_fine(features, content, style, args.ctf_side, args.ctf_iterations,
                                              args.scales)
    report["coarse_to_fine"]["benchmark_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
