"""``results.json`` -> ``REPORT.md`` and two plots: ratios first, absolute times beside them."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: The issue's targets on this machine, checked against the run (not asserted by tests).
TARGET_FP32_OF_MATMUL = 0.90
TARGET_INT8_SPEEDUP = 2.0
TARGET_INT8_PSNR = 36.0
#: Served 512² latency (JPEG in, PNG out, one client) over bare ONNX Runtime fp32 with every
#: core, by the best instruction set the CPU has (the first of these flags it shows).
TARGET_SERVED = {"amx_bf16": 0.3, "avx512_bf16": 0.45, "avx2": 0.85}
#: PNG out over JPEG out, one client, on the same server.
TARGET_PNG_OVER_JPEG = 1.3
TARGET_TILED_RSS_MB = 3 * 1024
#: The burst of large photos (``python -m bench.load --mode burst``, load.json beside the results).
TARGET_BURST_PAINTED = 4
TARGET_BURST_AVAILABLE_GIB = 3.0


def carried_dates(results: dict) -> dict[str, str]:
    """Section -> the date of the run that measured it, for the sections ``results`` carried
    over (files written before the dates were kept per section name one date for all)."""
    carried = results.get("carried_over") or {}
    return carried.get("dates") or dict.fromkeys(carried.get("sections", []), carried.get("from", "an earlier run"))


def brief(row: dict) -> str:
    if "skipped" in row:
        return f"skipped ({row['skipped']})"
    if "error" in row:
        return f"error ({row['error']})"
    return f"median {row['median_s']:.3f}s, p90 {row['p90_s']:.3f}s, peak RSS {row['peak_rss_mb']:.0f} MB"


def _size(row: dict) -> str:
    return f"{row['width']}×{row['height']}"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def enrich(results: dict) -> None:
    """Derived figures: GFLOP/s, fraction of matmul, images/s, speed-up over ORT fp32."""
    matmul = results["matmul"][str(results["threads"])]["gflops"]
    fp32 = {(r["height"], r["width"]): r for r in results.get("models", [])
            if r["kind"] == "ort_fp32" and "from_run" not in r}
    for row in results.get("models", []):
        if "median_s" not in row:
            continue
        row["gflops"] = row["flops"] / row["median_s"] / 1e9
        row["of_matmul"] = row["gflops"] / matmul
        row["images_per_s"] = 1 / row["median_s"]
        base = fp32.get((row["height"], row["width"]))
        if base and "median_s" in base and "from_run" not in row and "from_run" not in base:
            row["speedup_vs_ort_fp32"] = base["median_s"] / row["median_s"]


def model_table(rows: list[dict]) -> list[str]:
    lines = ["| size | path | median s | p90 s | images/s | GFLOP/s | of matmul | vs ORT fp32 | PSNR vs ORT fp32 dB "
             "| peak RSS MB | warm-up s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: (r["height"] * r["width"], r["kind"])):
        if "median_s" not in row:
            lines.append(f"| {_size(row)} | {row['kind']} | {brief(row)} | | | | | | | | |")
            continue
        psnr = row.get("psnr_db_vs_ort_fp32")
        kind = row["kind"] + (f" (run of {row['from_run']})" if "from_run" in row else "")
        lines.append(
            f"| {_size(row)} | {kind} | {row['median_s']:.3f} | {row['p90_s']:.3f} | "
            f"{row['images_per_s']:.2f} | {row['gflops']:.1f} | {row['of_matmul']:.0%} | "
            f"{row.get('speedup_vs_ort_fp32', float('nan')):.2f}× | {'' if psnr is None else f'{psnr:.1f}'} | "
            f"{row['peak_rss_mb']:.0f} | {row['warmup_s']:.1f} |")
    return lines


def _case(models: list[dict], kind: str, side: int, key: str) -> dict | None:
    return next((r for r in models if r["kind"] == kind and r["height"] == r["width"] == side and key in r), None)


def targets(results: dict) -> list[str]:
    lines = ["| target | measured | |", "|---|---|---|"]
    models = results.get("models", [])
    side = max((r["height"] for r in models if r["height"] == r["width"] and r["height"] <= 512), default=None)
    fp32 = _case(models, "ort_fp32", side, "of_matmul")
    if fp32:
        # A float32 network cannot outrun dense float32 matmul on the same cores: if it did, the
        # yardstick was measured in a slow moment of the machine, and the fraction means nothing.
        verdict = ("**inconclusive**: the yardstick measured below the network's own rate"
                   if fp32["of_matmul"] > 1 else _met(fp32["of_matmul"] >= TARGET_FP32_OF_MATMUL))
        lines.append(f"| ORT fp32 ≥ {TARGET_FP32_OF_MATMUL:.0%} of matmul GFLOP/s at {side}² | "
                     f"{fp32['of_matmul']:.0%} ({fp32['gflops']:.1f} GFLOP/s) | {verdict} |")
    for kind in ("ort_int8", "ov_int8"):
        int8 = _case(models, kind, side, "speedup_vs_ort_fp32")
        if int8 and "psnr_db_vs_ort_fp32" in int8:
            speedup, psnr = int8["speedup_vs_ort_fp32"], int8["psnr_db_vs_ort_fp32"]
            ok = speedup >= TARGET_INT8_SPEEDUP and psnr >= TARGET_INT8_PSNR
            lines.append(f"| {kind} ≥ {TARGET_INT8_SPEEDUP}× ORT fp32 throughput at {side}², PSNR ≥ "
                         f"{TARGET_INT8_PSNR:.0f} dB | {speedup:.2f}×, {psnr:.1f} dB | {_met(ok)} |")
    lines += serving_targets(results)
    for row in results.get("highres", []):
        if row.get("tiled") and "peak_rss_mb" in row and row.get("side", 0) >= 4096:
            lines.append(f"| peak RSS ≤ 3 GiB, {row['side']}² tiled | {row['peak_rss_mb']:.0f} MB | "
                         f"{_met(row['peak_rss_mb'] <= TARGET_TILED_RSS_MB)} |")
    return lines


def quality_lines(quality: dict) -> list[str]:
    if "error" in quality:
        return [_failed("Quality", quality)]
    lines = [f"Against ORT fp32 output on {quality.get('photos', '?')} real photos at {quality.get('side', '?')}px "
             "(0..255 units):", "", "| variant | PSNR dB | max abs diff |", "|---|---:|---:|"]
    for name in ("int8", "fp16"):
        if name in quality:
            row = quality[name]
            lines.append(f"| {name} | {row['psnr_db']:.1f} | {row['max_abs_diff']:.1f} |")
    return lines


def highres_lines(rows: list[dict]) -> list[str]:
    lines = ["| size | mode | seconds | peak RSS MB | PSNR vs whole image dB |", "|---|---|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row.get('side', '?')}² | {'tiled' if row.get('tiled') else 'whole'} | "
                         f"error: {row['error']} | | |")
            continue
        psnr = row.get("psnr_vs_whole_db")
        lines.append(f"| {row['side']}² | {'tiled' if row['tiled'] else 'whole'} | {row['seconds']:.1f} | "
                     f"{row['peak_rss_mb']:.0f} | {'' if psnr is None else f'{psnr:.1f}'} |")
    return lines


def served_target(flags: dict) -> tuple[float, str]:
    """The served-latency target for a CPU with ``flags``, and the flag that sets it."""
    flag = next((f for f in TARGET_SERVED if flags.get(f)), "avx2")
    return TARGET_SERVED[flag], flag


def serving_targets(results: dict) -> list[str]:
    """Served latency against bare ONNX Runtime fp32 (every core), PNG against JPEG out, and
    concurrency-4 throughput against the settings served before the runtime choice."""
    configurations = results.get("serving", {}).get("configurations", {})
    auto, before = configurations.get("auto"), configurations.get("before")
    if not auto:
        return []
    target, flag = served_target(results.get("machine", {}).get("cpu_flags", {}))
    lines = []
    for i, row in enumerate(auto["sizes"]):
        ratio, stages = row["ratio_to_bare"], row.get("stages")
        # the network alone sets how close to the target any serving can come: said beside a miss
        network = (f" (the network alone: {stages['network_s'] / row['bare_ort_fp32']['median_s']:.2f}×)"
                   if stages and ratio > target else "")
        lines.append(f"| served ({row['runtime']}, JPEG in, PNG out) ≤ {target}× bare ORT fp32 "
                     f"({row['bare_ort_fp32']['threads']} threads; {flag}) at {row['size']}, c=1 | {ratio:.2f}×"
                     f"{network} | {_met(ratio <= target)} |")
        if "png_over_jpeg" in row:
            lines.append(f"| PNG out ≤ {TARGET_PNG_OVER_JPEG}× JPEG out at {row['size']}, c=1 | "
                         f"{row['png_over_jpeg']:.2f}× | {_met(row['png_over_jpeg'] <= TARGET_PNG_OVER_JPEG)} |")
        for mixed in (False, True) if before else ():
            now, then = _level(row, 4, mixed), _level(before["sizes"][i], 4, mixed)
            if now and then:
                how = "4 clients over 4 styles" if mixed else "c=4"
                lines.append(f"| {how} throughput not below before ({then['images_per_s']:.2f}/s) at "
                             f"{row['size']} | {now['images_per_s']:.2f}/s | "
                             f"{_met(now['images_per_s'] >= then['images_per_s'])} |")
    return lines


def burst_targets(burst: dict) -> list[str]:
    painted, refused, count = burst["painted"], burst["refused_503"], burst["count"]
    polite = refused == count - painted and len(burst["retry_after"]) == refused and all(burst["retry_after"])
    ok = painted >= TARGET_BURST_PAINTED and polite and burst["workers_killed"] == 0
    lines = [f"| burst of {count} {burst['side']}² photos: ≥ {TARGET_BURST_PAINTED} painted, the rest 503 + "
             f"Retry-After, no worker killed | {painted} painted, {refused} refused "
             f"({', '.join(f'{k} {v}' for k, v in burst['reasons'].items()) or 'none'}), "
             f"{burst['workers_killed']} killed | {_met(ok)} |"]
    if "lowest_available_gib" in burst:
        low = burst["lowest_available_gib"]
        lines.append(f"| ≥ {TARGET_BURST_AVAILABLE_GIB:g} GiB available throughout the burst | {low:.1f} GiB | "
                     f"{_met(low >= TARGET_BURST_AVAILABLE_GIB)} |")
    return lines


def load_targets(path: Path) -> list[str]:
    """The burst's targets, from the load runs' results file when it has a burst."""
    if not path.exists():
        return []
    burst = json.loads(path.read_text()).get("burst")
    return burst_targets(burst) if burst else []


def _level(row: dict, concurrency: int, mixed: bool = False, fmt: str = "png") -> dict | None:
    return next((level for level in row["levels"] if level["concurrency"] == concurrency
                 and ("styles" in level) == mixed and level.get("format", "png") == fmt), None)


def threads_lines(configurations: dict) -> list[str]:
    """Every core per worker against one thread, at one client and at four."""
    every, one = configurations.get("auto"), configurations.get("auto-1-thread")
    if not (every and one):
        return []
    lines = ["", "Threads per worker (the measured engine choice both times; ratio below 1: one thread is "
             "faster):", "", "| size | clients | every core: median s, images/s | one thread: median s, images/s "
             "| one ÷ every (images/s) |", "|---|---|---:|---:|---:|"]
    for mine, theirs in zip(every["sizes"], one["sizes"], strict=True):
        for concurrency, mixed in ((1, False), (4, False), (4, True)):
            a, b = _level(mine, concurrency, mixed), _level(theirs, concurrency, mixed)
            if a and b:
                clients = f"{concurrency}" + (" over 4 styles" if mixed else "")
                lines.append(f"| {mine['size']} | {clients} | {a['median_s']:.3f}, {a['images_per_s']:.2f} | "
                             f"{b['median_s']:.3f}, {b['images_per_s']:.2f} | "
                             f"{b['images_per_s'] / a['images_per_s']:.2f} |")
    return lines


def cold_start_lines(found: dict) -> list[str]:
    """Time to ready per model: an empty runtime folder (every worker measures) and a warm one."""
    if not {"cold", "warm"} <= found.keys():
        return [f"- `{name}`: all {len(rss['models'])} built models loaded, idle RSS {rss['rss_mb']:.0f} MB "
                f"(ready in {rss['ready_s']:.0f} s)." for name, rss in found.items()]
    cold, warm = found["cold"], found["warm"]
    lines = ["", f"Every built model on one server ({len(warm['models'])}): idle RSS {warm['rss_mb']:.0f} MB. "
             f"Seconds from start until each model is ready, with an empty runtime folder (each worker measures "
             f"its engine choice) and again with it warm (load average before: cold "
             f"{', '.join(map(str, cold['load_average']['before']))}; warm "
             f"{', '.join(map(str, warm['load_average']['before']))}):", "",
             "| model | cold s | warm s |", "|---|---:|---:|"]
    for model in sorted(cold["ready_per_model_s"], key=cold["ready_per_model_s"].get):
        lines.append(f"| {model} | {cold['ready_per_model_s'][model]:.1f} | "
                     f"{warm['ready_per_model_s'].get(model, float('nan')):.1f} |")
    lines.append(f"| all | {cold['ready_s']:.1f} | {warm['ready_s']:.1f} |")
    return lines


def serving_lines(serving: dict) -> list[str]:
    if "configurations" not in serving:
        return [_failed("Serving", serving)]
    lines = [f"One worker per style; {serving['statistic']}. Bare model: ONNX Runtime fp32 with "
             f"{serving['bare_threads']} threads on the decoded pixels. `auto`: the measured engine choice, every "
             "core per worker; `auto-1-thread`: the same with one thread per worker; `before`: ONNX Runtime fp32 "
             "on one thread (the settings served until the runtime choice). JPEG in; PNG out unless the format "
             "says JPEG. The machine's load average is given beside each configuration: other work on it slows "
             "the served figures and the bare model alike, so compare the ratios.", "",
             "| configuration | size | runtime | bare model median s | clients | out | median s | p90 s | "
             "images/s | served ÷ bare (c=1, PNG) |", "|---|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for name, config in serving["configurations"].items():
        for row in config["sizes"]:
            for level in row["levels"]:
                clients = f"{level['concurrency']}" + (f" over {level['styles']} styles" if "styles" in level else "")
                lines.append(f"| {name} | {row['size']} | {row['runtime']} | {row['bare_ort_fp32']['median_s']:.3f} | "
                             f"{clients} | {level.get('format', 'png').upper()} | {level['median_s']:.3f} | "
                             f"{level['p90_s']:.3f} | {level['images_per_s']:.2f} | {row['ratio_to_bare']:.2f}× |")
    lines.append("")
    for name, config in serving["configurations"].items():
        load = config.get("load_average")
        beside = (f"; load average {', '.join(map(str, load['before']))} before, "
                  f"{', '.join(map(str, load['after']))} after" if load else "")
        lines.append(f"- `{name}`: server ready in {config['server_ready_s']:.1f} s, peak RSS "
                     f"{config['peak_rss_mb']:.0f} MB{beside}.")
    lines += stages_lines(serving["configurations"].get("auto", {}))
    lines += threads_lines(serving["configurations"])
    lines += cold_start_lines(serving.get("all_models", {}))
    return lines


def stages_lines(auto: dict) -> list[str]:
    """Where a served c=1 request's time goes, each stage also as a share of bare ORT fp32."""
    rows = [row for row in auto.get("sizes", []) if "stages" in row]
    if not rows:
        return []
    lines = ["", "Where a request's time goes (`auto`, one client, JPEG in, PNG out): each stage timed in this "
             "process on the engine an `auto` worker chooses, when the bare model is timed (each stage's fastest "
             "median); *TorchServe and HTTP* is what the served median has beyond their sum. In brackets: × bare "
             "ORT fp32.", "",
             "| size | runtime | served s | decode s | network s | finishing s | PNG encode s | "
             "TorchServe and HTTP s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        stages, bare = row["stages"], row["bare_ort_fp32"]["median_s"]
        served = _level(row, 1, False)["median_s"]
        rest = served - sum(stages[k] for k in ("decode_s", "network_s", "finishing_s", "png_s"))
        cells = [served, stages["decode_s"], stages["network_s"], stages["finishing_s"], stages["png_s"], rest]
        shares = " | ".join(f"{cell:.3f} ({cell / bare:.2f}×)" for cell in cells)
        lines.append(f"| {row['size']} | {stages['runtime']} | {shares} |")
    return lines


def _failed(section: str, found: dict) -> str:
    """The line a section that failed shows instead of its figures."""
    return f"{section} benchmark failed: {found.get('error', found)}"


def gatys_lines(gatys: dict) -> list[str]:
    if "error" in gatys:
        return [_failed("Gatys", gatys)]
    lines = [f"Loss networks: {gatys['vgg_weights']}; {gatys['threads']} threads; peak RSS "
             f"{gatys['peak_rss_mb']:.0f} MB.", "", "| case | seconds per iteration |", "|---|---:|"]
    lines += [f"| {case} | {seconds:.2f} |" for case, seconds in gatys["seconds_per_iteration"].items()]
    ctf = gatys["coarse_to_fine"]
    scales = next(k for k in ctf["targets"][0] if k.endswith("_scales_s")).split("_")[0]
    lines += ["", f"Coarse-to-fine at {ctf['side']}px, {ctf['iterations_per_level']} L-BFGS iterations per level: "
              f"seconds (and work in full-size iterations) to reach the loss single-scale reaches after "
              f"¼, ½, ¾ and all of its iterations.", "",
              f"| target loss | single-scale s | {scales} scales s | single work | {scales} scales work |",
              "|---:|---:|---:|---:|---:|"]
    for t in ctf["targets"]:
        lines.append(f"| {t['target_loss']:.4g} | {t['single_scale_s']} | {t[f'{scales}_scales_s']} | "
                     f"{t['single_scale_full_iterations']} | {t[f'{scales}_scales_full_iterations']} |")
    return lines


def plot(results: dict, out: Path) -> list[str]:
    rows = [r for r in results.get("models", []) if "median_s" in r]
    if not rows:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    kinds = sorted({r["kind"] for r in rows})
    sizes = sorted({(r["height"], r["width"]) for r in rows}, key=lambda s: s[0] * s[1])
    for kind in kinds:
        mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["height"] * r["width"])
        left.plot([r["height"] * r["width"] / 1e6 for r in mine], [r["median_s"] for r in mine], "o-", label=kind)
    left.set(xscale="log", yscale="log", xlabel="megapixels", ylabel="median seconds per image",
             title="Latency, bare network")
    left.legend(fontsize=8)
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        values = [next((r["of_matmul"] for r in rows if r["kind"] == kind and (r["height"], r["width"]) == s), 0)
                  for s in sizes]
        right.bar([j + i * width for j in range(len(sizes))], [v * 100 for v in values], width, label=kind)
    right.axhline(TARGET_FP32_OF_MATMUL * 100, color="k", linestyle="--", linewidth=1)
    right.set_xticks([j + 0.4 - width / 2 for j in range(len(sizes))], [f"{w}×{h}" for h, w in sizes])
    right.set(ylabel="% of fp32 matmul GFLOP/s", title="Achieved compute rate")
    fig.tight_layout()
    fig.savefig(out / "fast_path.png", dpi=110)
    plt.close(fig)
    return ["![latency and compute rate](fast_path.png)"]


def _yardstick(threads: str, matmul: dict) -> str:
    text = f"{matmul['gflops']:.1f} GFLOP/s with {threads} thread(s)"
    if "gflops_measured" in matmul:
        text += " (measured " + " and ".join(f"{g:.1f}" for g in matmul["gflops_measured"]) + ")"
    return text


def write(results: dict, out: Path) -> None:
    enrich(results)
    m = results["machine"]
    mm = results["matmul"]
    lines = [
        "# Benchmark report", "",
        "Generated by `.venv/bin/python -m bench` — do not edit by hand. All figures come from one run on "
        "one machine; compare ratios across machines, not seconds.", "",
        f"- Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}; {m['date']}.",
        "- fp32 matmul yardstick (2048², median of 10; the higher of a measurement before and one after the "
        "model cases): " + ", ".join(_yardstick(t, v) for t, v in mm.items()) + ".",
        f"- OpenVINO {m.get('openvino')}; CPU flags: "
        + (", ".join(f"{flag} {'yes' if on else 'no'}" for flag, on in m.get("cpu_flags", {}).items()) or "not read")
        + f"; OpenVINO CPU capabilities: {', '.join(m.get('openvino_cpu_capabilities') or []) or 'n/a'}.",
        f"- Style `{results['style']}`; {results['runs']} timed runs per case after one warm-up; "
        f"{results['threads']} threads for the bare-network cases.",
        *(["- Carried over unchanged, not re-measured: "
           + "; ".join(f"{section} (run of {date})" for section, date in carried_dates(results).items()) + "."]
          if results.get("carried_over") else []),
        "", "## Targets", "", *targets(results), *load_targets(out / "load.json"),
    ]
    if "models" in results:
        lines += ["", "## Fast path: the bare network", "",
                  "GFLOP/s from the network's FLOP count (torch FlopCounterMode, 2 per multiply-add) over the "
                  "median time; *of matmul* is that rate over the matmul yardstick with the same threads.", "",
                  *model_table(results["models"]), "", *plot(results, out)]
    if "quality" in results:
        lines += ["", "## Reduced precision: quality", "", *quality_lines(results["quality"])]
    if "highres" in results:
        lines += ["", "## High resolution: tiled vs whole image", "", *highres_lines(results["highres"])]
    if "serving" in results:
        lines += ["", "## End to end through TorchServe (JPEG in; PNG or JPEG out)", "",
                  *serving_lines(results["serving"])]
    if "gatys" in results:
        lines += ["", "## Gatys path", "", *gatys_lines(results["gatys"])]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
