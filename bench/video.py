"""The video path on this machine: how much the pipeline costs beyond the network, how much
flicker stabilization removes, and how much memory a long clip takes.

    .venv/bin/python -m bench.video            # 360p and 720p pans, a 320x240 pan, long-clip memory
    .venv/bin/python -m bench.video --quick    # tiny clips: checks the machinery

Clips are synthetic pans over a real photo (``core.photos.content_photos``) with a tone,
made on the fly (``tests.support.clips``). The painter is the CLI's: the built ``udnie``
style on the engine this machine chose (``stylize.models.load``).

- **Speed**: frames per second of the network alone (``Stylizer.paint`` on frames decoded
  beforehand, in the pipeline's batches) against the whole pipeline (``core.video.paint_video``:
  decode, paint, stabilize, encode, audio copy) on the same clip, one run each. Target: the
  pipeline keeps 85% of the network's rate.
- **Flicker**: the warping error (``core.stabilize.warping_error``) of per-frame painting and of
  stabilized painting at several strengths, and the mean difference of each to per-frame
  painting, on the issue's 64-frame 320x240 pan. Targets: at the default strength the warping
  error is at most half of per-frame painting's, the difference at most 10 levels.
- **Preservation**: frame count, timestamps, size and audio packets of the output against the
  input, exactly.
- **Memory**: peak RSS of a process painting a 60-frame and a 120-frame 720p clip (both longer
  than everything the pipeline and the encoder hold): bounded means the longer clip peaks no
  higher than the shorter one.

Writes ``bench/results/video.json`` and ``video.md`` with the CPU model, flags and the load
average before and after (the machine is shared: wall-clock figures carry others' work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import av
import numpy as np
from PIL import Image

from core import cpu
from core.paths import BENCH_RESULTS, ROOT
from core.photos import content_photos
from core.stabilize import Stabilizer, warping_error
from core.video import VideoOptions, paint_video
from stylize.batch import Options
from stylize.models import load
from tests.support import clips

STYLE = "udnie"
SPEED_TARGET = 0.85
WARP_TARGET = 0.5
DIFFERENCE_TARGET = 10.0
STRENGTHS = (0.3, 0.45, 0.6, 0.75, 0.9)
STEP = 2  # pixels the camera pans per frame


def scene(width: int, height: int, frames: int) -> np.ndarray:
    """The first real photo, scaled to ``height`` and wide enough for the pan."""
    photo = Image.open(content_photos()[0]).convert("RGB")
    needed = width + STEP * frames
    scale = max(height / photo.height, needed / photo.width)
    photo = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1), Image.Resampling.LANCZOS)
    return np.asarray(photo)[:height, :needed]


def make(folder: Path, name: str, width: int, height: int, frames: int) -> clips.Clip:
    return clips.make_clip(folder / name, width=width, height=height, frames=frames, fps=24, step=STEP,
                           scene=scene(width, height, frames), preset="veryfast", metadata=False)  # fmt: skip


def painter(stylizer):
    params = Options().params()

    def paint(frames: list[Image.Image]) -> list[Image.Image]:
        return stylizer.paint(frames, [params] * len(frames))

    return paint


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def cpu_seconds() -> float:
    """CPU time of this process, every thread (the engine's, the pipeline's) included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``work()``."""
    wall, cpu_before = time.perf_counter(), cpu_seconds()
    work()
    return time.perf_counter() - wall, cpu_seconds() - cpu_before


def speed(stylizer, clip: clips.Clip, folder: Path) -> dict:
    """The network alone before and after the pipeline (their mean is the yardstick: the
    machine's other load drifts during a run), the pipeline once between them."""
    paint = painter(stylizer)
    batch = VideoOptions().batch
    frames = [Image.fromarray(array) for array in decoded(clip.path)]
    paint(frames[:1])  # warm the engine for this size

    def network() -> None:
        for start in range(0, len(frames), batch):
            paint(frames[start : start + batch])

    target = folder / f"painted_{clip.height}p.mp4"
    before = timed(network)
    pipeline_s, pipeline_cpu = timed(lambda: paint_video(clip.path, target, paint))
    after = timed(network)
    network_s, network_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    result = paint_video(clip.path, folder / "again.mp4", paint)  # the summary; its bytes must match
    n = clip.frames
    return {
        "size": f"{clip.width}x{clip.height}", "frames": n,
        "network_fps": round(n / network_s, 3), "network_fps_runs": [round(n / before[0], 3), round(n / after[0], 3)],
        "pipeline_fps": round(n / pipeline_s, 3), "ratio": round(network_s / pipeline_s, 3),
        "network_cpu_s_per_frame": round(network_cpu / n, 3), "pipeline_cpu_s_per_frame": round(pipeline_cpu / n, 3),
        "deterministic": target.read_bytes() == (folder / "again.mp4").read_bytes(),
        "preserved": preserved(clip, target), **result.summary(),
    }  # fmt: skip


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


def preserved(clip: clips.Clip, target: Path) -> dict:
    """Frame count, timestamps, size and audio packets of the output against the input."""
    with av.open(str(target)) as out:
        frames = list(out.decode(video=0))
    audio_out, audio_in = audio_packets(target), audio_packets(clip.path)
    return {
        "frames": len(frames) == clip.frames,
        "timestamps": [round(float(f.time), 6) for f in frames] == [round(t, 6) for t in clip.times],
        "size": {(f.width, f.height) for f in frames} == {(clip.width, clip.height)},
        "audio_packets": audio_out == audio_in and len(audio_in) > 0,
    }


def flicker(stylizer, clip: clips.Clip, folder: Path) -> dict:
    """Per-frame painting against stabilization at each strength (on the frames before the
    encoder), and the default strength through the whole pipeline (after it)."""
    contents = decoded(clip.path)
    paint = painter(stylizer)
    alone = []
    batch = VideoOptions().batch
    for start in range(0, len(contents), batch):
        alone += [np.asarray(p) for p in paint([Image.fromarray(c) for c in contents[start : start + batch]])]
    base = warping_error(contents, alone)
    rows = [{"stabilize": 0.0, "warping_error": round(base, 3), "ratio": 1.0, "difference": 0.0}]
    for strength in STRENGTHS:
        stabilizer = Stabilizer(strength)
        steady = [stabilizer(c, p) for c, p in zip(contents, alone, strict=True)]
        rows.append(_row(strength, contents, steady, alone, base))
    default = VideoOptions().stabilize
    encoded = {}
    for strength in (0.0, default):
        target = folder / f"flicker_{strength}.mp4"
        paint_video(clip.path, target, paint, VideoOptions(stabilize=strength))
        encoded[strength] = decoded(target)
    through = _row(default, contents, encoded[default], encoded[0.0], warping_error(contents, encoded[0.0]))
    return {"size": f"{clip.width}x{clip.height}", "frames": clip.frames, "sweep": rows, "default": default,
            "pipeline": {"per_frame_warping_error": round(warping_error(contents, encoded[0.0]), 3), **through}}


def _row(strength: float, contents, steady, alone, base: float) -> dict:
    error = warping_error(contents, steady)
    difference = float(np.abs(np.stack(steady).astype(np.float32) - np.stack(alone)).mean())
    return {"stabilize": strength, "warping_error": round(error, 3), "ratio": round(error / base, 3),
            "difference": round(difference, 3)}  # fmt: skip


def peak_rss(clip: clips.Clip, folder: Path) -> dict:
    """Peak RSS of a fresh process opening the style and painting ``clip`` (``--rss-child``)."""
    target = folder / f"rss_{clip.frames}.mp4"
    command = [sys.executable, "-m", "bench.video", "--rss-child", str(clip.path), str(target)]
    started = time.perf_counter()
    output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    seconds = round(time.perf_counter() - started, 1)
    return {"size": f"{clip.width}x{clip.height}", "frames": clip.frames, "seconds": seconds,
            "peak_rss_mib": round(int(output.split()[-1]) / 1024, 1)}  # fmt: skip


def rss_child(source: Path, target: Path) -> None:
    paint_video(source, target, painter(load(STYLE)))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def run(quick: bool) -> dict:
    load_before = os.getloadavg()
    stylizer = load(STYLE)
    sizes = [(160, 90, 8), (320, 180, 6)] if quick else [(640, 360, 32), (1280, 720, 24)]
    flicker_size = (96, 72, 12) if quick else (320, 240, 64)
    long_clips = [(320, 180, 20), (320, 180, 40)] if quick else [(1280, 720, 60), (1280, 720, 120)]
    with tempfile.TemporaryDirectory(prefix="bench-video-") as name:
        folder = Path(name)
        speeds = [speed(stylizer, make(folder, f"{h}p.mp4", w, h, n), folder) for w, h, n in sizes]
        steadiness = flicker(stylizer, make(folder, "flicker.mp4", *flicker_size), folder)
        memory = [peak_rss(make(folder, f"long{n}.mp4", w, h, n), folder) for w, h, n in long_clips]
    return {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "style": STYLE,
        "runtime": stylizer.runtime, "cpu": cpu.cpu_model(), "cpu_flags": cpu.relevant_flags(),
        "cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
        "options": {k: str(v) for k, v in vars(VideoOptions()).items()}, "speed": speeds, "flicker": steadiness,
        "memory": memory, "quick": quick,
    }  # fmt: skip


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: dict) -> str:
    loads = [" / ".join(f"{x:.1f}" for x in results[key]) for key in ("load_before", "load_after")]
    lines = [
        f"# Video: pipeline against network, flicker, memory ({results['cpu']}, {results['cores']} cores)", "",
        f"Measured {results['measured']} by `python -m bench.video`: style `{results['style']}` on "
        f"{results['runtime']}. CPU flags: {', '.join(results['cpu_flags'])}. Load average (1/5/15 min) before: "
        f"{loads[0]}, after: {loads[1]} — the machine is shared, so wall-clock figures carry other people's work.",
        "", f"Pipeline options (defaults): {', '.join(f'{k}={v}' for k, v in results['options'].items())}.", "",
        "## Speed: the network alone against the whole pipeline", "",
        "Synthetic pans over a real photo at 24 fps with a tone. *Network*: the painter on frames decoded "
        "beforehand, in the pipeline's batches; *pipeline*: `paint_video` (decode, paint, stabilize, encode "
        "H.264, copy the audio), one run, same clip, between two runs of the network alone (their mean is the "
        "yardstick, since the machine's other load drifts). *CPU s/frame*: CPU time of the process, all threads, "
        "per frame: steadier than wall time on a shared machine. *Same bytes*: a second pipeline run wrote "
        "identical bytes.", "",
        f"| clip | frames | network frames/s (runs) | pipeline frames/s | pipeline / network (target ≥ {SPEED_TARGET}) "
        "| CPU s/frame network, pipeline | same bytes | frames, timestamps, size, audio packets kept |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]  # fmt: skip
    for row in results["speed"]:
        kept = "yes" if all(row["preserved"].values()) else f"NO: {row['preserved']}"
        runs = " / ".join(f"{x:.2f}" for x in row["network_fps_runs"])
        lines.append(f"| {row['size']} | {row['frames']} | {row['network_fps']:.2f} ({runs}) | "
                     f"{row['pipeline_fps']:.2f} | **{row['ratio']:.2f}** ({_met(row['ratio'] >= SPEED_TARGET)}) | "
                     f"{row['network_cpu_s_per_frame']:.2f}, {row['pipeline_cpu_s_per_frame']:.2f} | "
                     f"{'yes' if row['deterministic'] else 'NO'} | {kept} |")
    steady = results["flicker"]
    lines += [
        "", f"## Flicker: warping error, {steady['size']} pan of {steady['frames']} frames", "",
        "Warping error: mean |out_t − warp(out_t−1)| over the pixels the optical flow on the content frames "
        "trusts (forward–backward check), in 8-bit levels. *Difference*: mean |stabilized − per-frame painting|. "
        "The sweep is on the frames before the encoder; the last row is the default through the whole "
        "pipeline (both outputs decoded from H.264).", "",
        "| stabilize | warping error | × per-frame | difference to per-frame (levels) |", "|---:|---:|---:|---:|",
    ]  # fmt: skip
    for row in steady["sweep"]:
        label = f"{row['stabilize']:g}" + (" (default)" if row["stabilize"] == steady["default"] else "")
        lines.append(f"| {label} | {row['warping_error']:.2f} | {row['ratio']:.2f} | {row['difference']:.2f} |")
    through = steady["pipeline"]
    ok = through["ratio"] <= WARP_TARGET and through["difference"] <= DIFFERENCE_TARGET
    lines += [
        f"| {through['stabilize']:g}, whole pipeline | {through['warping_error']:.2f} (per-frame "
        f"{through['per_frame_warping_error']:.2f}) | **{through['ratio']:.2f}** | **{through['difference']:.2f}** |",
        "", f"Targets: warping error ≤ {WARP_TARGET}× per-frame painting's, difference ≤ {DIFFERENCE_TARGET:g} levels, "
        f"at the default: {_met(ok)}.",
        "", "## Memory: peak RSS of a fresh process painting a clip", "",
        "The process opens the style and paints the clip with the defaults; its peak resident set "
        "(`ru_maxrss`) includes the engine and the network's activations at that size.", "",
        "| clip | frames | seconds | peak RSS MiB |", "|---|---:|---:|---:|",
    ]  # fmt: skip
    for row in results["memory"]:
        lines.append(f"| {row['size']} | {row['frames']} | {row['seconds']:.0f} | {row['peak_rss_mib']:.0f} |")
    short, long = results["memory"][0], results["memory"][-1]
    growth = long["peak_rss_mib"] - short["peak_rss_mib"]
    verdict = ("within 5%: memory does not grow with the clip's length" if growth <= 0.05 * short["peak_rss_mib"]
               else "more than 5%: see the budget in docs/video.md")  # fmt: skip
    lines += ["", f"{long['frames']} frames peak at {growth:+.0f} MiB against {short['frames']} frames, "
              f"{verdict}.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.video", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny clips: checks the machinery, writes nothing")
    parser.add_argument("--rss-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    results = run(args.quick)
    text = report(results)
    if args.quick:
        print(text)
        return 0
    BENCH_RESULTS.mkdir(parents=True, exist_ok=True)
    (BENCH_RESULTS / "video.json").write_text(json.dumps(results, indent=2) + "\n")
    (BENCH_RESULTS / "video.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
