"""Run one benchmark case in a fresh Python process and return its result with its peak RSS.

Why a process per case: ``ru_maxrss`` is a high-water mark that never goes down, and
allocator caches, ONNX Runtime arenas and compiled kernels outlive the case that made
them. A fresh process gives every case its own peak memory and no warm state from the
previous one.

    python -m bench.isolated bench.model_speed:time_network '{"kind": "ort_fp32", ...}'
"""

from __future__ import annotations

import importlib
import json
import resource
import subprocess
import sys

from core import settings
from core.paths import ROOT

MARKER = "BENCH-RESULT "


def run(target: str, timeout: float = 3600, **kwargs) -> dict:
    """``target`` is ``module:function``; its keyword arguments must be JSON. The result dict
    gets ``peak_rss_mb``; a case that fails returns ``{"error": ...}`` instead of raising, so
    one broken path is reported rather than ending the whole benchmark."""
    command = [sys.executable, "-m", "bench.isolated", target, json.dumps(kwargs)]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**settings.process_environment(), "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)[:400]}"}
    return json.loads(lines[-1].removeprefix(MARKER))


def main() -> None:
    target, kwargs = sys.argv[1], json.loads(sys.argv[2])
    module, function = target.split(":")
    result = getattr(importlib.import_module(module), function)(**kwargs)
    result.setdefault("peak_rss_mb", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
