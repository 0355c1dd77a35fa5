#!/usr/bin/env python3
"""Build-time steps of the image (Dockerfile), run with the image's own Python.

  no-cuda VENV          fail when the virtual environment carries a GPU stack: an NVIDIA or
                        Triton distribution, or a CUDA library file (libcudart, libcublas,
                        libcudnn...). The CPU variants must never ship those (a CUDA build of
                        torch pulls ~4 GB of them in silently when the CPU index is unreachable).
  no-torch VENV         fail when the real PyTorch is installed (the slim variants serve ONNX
                        only; docker/torch_stub stands in for TorchServe's imports).
  torch-free-store DIR  remove from a model store every archive whose code imports torch (the
                        Gatys model), so a slim image neither lists nor tries to load it.

Standard library only: it runs before and after the requirements are installed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

GPU_DISTRIBUTIONS = re.compile(r"^(nvidia[-_].*|triton|pytorch[-_]triton.*|cuda[-_].*|cupy.*|onnxruntime[-_]gpu)$",
                               re.IGNORECASE)
CUDA_LIBRARIES = re.compile(r"^lib(?:cuda|cudart|cublas|cublasLt|cudnn\w*|cufft|curand|cusolver|cusparse|nccl|nvrtc"
                            r"|nvJitLink)(?:[.-].*)?\.so(?:\.\d+)*$")
TORCH_IMPORT = re.compile(r"^\s*(?:import|from)\s+torch(?:vision)?(?:\s|\.|,|$)", re.MULTILINE)


def _distributions(venv: Path) -> dict[str, str]:
    """Installed distributions of the venv (name -> version), asked of its own interpreter."""
    script = ("import importlib.metadata as m, json; "
              "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def no_cuda(venv: Path) -> list[str]:
    problems = [f"distribution {name}=={version}" for name, version in sorted(_distributions(venv).items())
                if GPU_DISTRIBUTIONS.match(name)]
    problems += [f"library {path.relative_to(venv)}" for path in sorted(venv.rglob("*.so*"))
                 if CUDA_LIBRARIES.match(path.name)]
    return problems


def no_torch(venv: Path) -> list[str]:
    installed = _distributions(venv)
    return [f"distribution {name}=={installed[name]}" for name in ("torch", "torchvision", "torchaudio")
            if name in installed]


def needs_torch(archive: Path) -> bool:
    with zipfile.ZipFile(archive) as mar:
        return any(TORCH_IMPORT.search(mar.read(name).decode("utf-8", "replace"))
                   for name in mar.namelist() if name.endswith(".py"))


def torch_free_store(store: Path) -> list[str]:
    """Removes the archives that need torch; returns their names."""
    dropped = []
    for archive in sorted(store.glob("*.mar")):
        if needs_torch(archive):
            archive.unlink()
            dropped.append(archive.stem)
    return dropped


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("no-cuda", "no-torch", "torch-free-store"):
        print(__doc__, file=sys.stderr)
        return 2
    command, path = argv[0], Path(argv[1])
    if command == "torch-free-store":
        dropped = torch_free_store(path)
        kept = sorted(p.stem for p in path.glob("*.mar"))
        if not kept:
            print(f"build_checks: no torch-free archive left in {path} (run scripts/build.sh first)", file=sys.stderr)
            return 1
        print(f"build_checks: serving {', '.join(kept)}; left out (need torch): {', '.join(dropped) or 'none'}")
        return 0
    problems = no_cuda(path) if command == "no-cuda" else no_torch(path)
    if problems:
        what = "a GPU stack (CUDA/NVIDIA/Triton)" if command == "no-cuda" else "PyTorch"
        print(f"build_checks: this variant must not carry {what}, but {path} has:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    print(f"build_checks: {command}: {path} is clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
