"""The bare network on one image size, for each way of running it; and the machine's matmul rate.

Every function here runs inside its own process (``bench.isolated``), so each path's peak
memory is its own. Times are the network call only (float ``[1, 3, H, W]`` in 0..255 to the
stylized tensor): decoding and encoding are the server benchmark's business.

Paths (``KINDS``):

* ``torch_eager`` – the PyTorch module as exported from.
* ``torchscript`` – ``torch.jit.trace`` + ``freeze`` at the benchmarked size.
* ``torch_compile`` – ``torch.compile`` (Inductor, C++ kernels on CPU); the warm-up holds
  the compilation, reported separately.
* ``ort_fp32`` / ``ort_int8`` / ``ort_fp16`` – ONNX Runtime with the serving session
  settings on the built ``<style>[.variant].onnx``.
* ``ov_fp32`` / ``ov_bf16`` / ``ov_int8`` – OpenVINO on the same files, through the
  stylizer's own engines (``core.engines``); bf16 only where the CPU has it.

Each engine case also reports its output's PSNR against ONNX Runtime fp32 on the same photo.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core import codec, engines
from core.engines import Candidate
from core.paths import ONNX_DIR
from core.photos import photo
from core.runtime_choice import psnr_db

#: The engine cases, as the stylizer's candidates.
ENGINES = {
    "ort_fp32": Candidate("onnxruntime", "fp32"), "ort_int8": Candidate("onnxruntime", "int8"),
    "ort_fp16": Candidate("onnxruntime", "fp16"), "ov_fp32": Candidate("openvino", "fp32"),
    "ov_bf16": Candidate("openvino", "bf16"), "ov_int8": Candidate("openvino", "int8"),
}  # fmt: skip
KINDS = ["torch_eager", "torchscript", "torch_compile", *ENGINES]
ORT_VARIANTS = ENGINES  # the kinds that run a built ONNX file

Runner = Callable[[np.ndarray], object]


def onnx_path(style: str, kind: str) -> Path:
    return ENGINES[kind].model_file(ONNX_DIR / f"{style}.onnx")


def unavailable(kind: str) -> str | None:
    """Why an engine case cannot run on this machine, or None."""
    if kind.startswith("ov_") and engines.openvino_core() is None:
        return "openvino not installed"
    if kind == "ov_bf16" and not engines.openvino_cpu_has_bf16():
        return "no BF16 on this CPU"
    return None


def _torch_runner(kind: str, style: str, threads: int, example: np.ndarray) -> Runner:
    import torch

    from export import weights

    torch.set_num_threads(threads)
    net = weights.load_network(style).eval()
    with torch.inference_mode():
        if kind == "torchscript":
            net = torch.jit.freeze(torch.jit.trace(net, torch.from_numpy(example)))
        elif kind == "torch_compile":
            net = torch.compile(net)

    def run(x: np.ndarray) -> object:
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    return run


def _engine_runner(kind: str, style: str, threads: int) -> Runner:
    candidate = ENGINES[kind]
    engine = engines.open_engine(onnx_path(style, kind), candidate, threads)
    return lambda x: engine.run({"image": x})[0]


def time_network(kind: str, style: str, height: int, width: int, runs: int, threads: int) -> dict:
    """One warm-up call (its time kept apart: it includes compilation and arena growth),
    then ``runs`` timed calls on a real photo."""
    x = codec.to_array(photo(height, width))[None]
    started = time.perf_counter()
    runner = _engine_runner(kind, style, threads) if kind in ENGINES else _torch_runner(kind, style, threads, x)
    output = runner(x)
    warmup = time.perf_counter() - started
    quality = {}
    if kind in ENGINES:
        reference = _engine_runner("ort_fp32", style, threads)(x) if kind != "ort_fp32" else output
        quality = {"psnr_db_vs_ort_fp32": min(psnr_db(reference, np.asarray(output)), 999.0)}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t0)
    return {"times_s": times, "warmup_s": warmup, **quality, **summarize(times)}


def summarize(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "p90_s": float(np.percentile(times, 90))}


def network_flops(style: str, height: int, width: int) -> int:
    """Floating-point operations of one forward pass (2 per multiply-accumulate), counted by
    torch's FlopCounterMode on meta tensors: exact for these convolution networks, and free."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from export import weights

    net = weights.load_network(style).eval().to("meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.empty(1, 3, height, width, device="meta"))
    return int(counter.get_total_flops())


def matmul_gflops(threads: int, n: int = 2048, runs: int = 10) -> dict:
    """Dense fp32 matmul rate, the yardstick each path is reported against: what this CPU
    (with ``threads`` cores) does on the friendliest possible workload."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.matmul(a, b)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"n": n, "threads": threads, "median_s": median, "gflops": 2 * n**3 / median / 1e9}
