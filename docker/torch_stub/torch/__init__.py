"""A stand-in for ``torch`` in the slim serving image, which has no PyTorch.

TorchServe 0.12's Python worker imports torch although the fast styles never use it: its
wire protocol (``ts.protocol.otf_message_handler``) checks ``isinstance(value, torch.Tensor)``
and ``ts.torch_handler.base_handler`` (the handlers' base class) reads ``torch.__version__``,
``torch.cuda.is_available()`` and imports ``torch.profiler`` at import time. This module
answers exactly those, so the worker runs the ONNX handlers without a 1-4 GB PyTorch install;
anything else (``torch.nn``, ``torch.load``...) raises an ``ImportError`` that says this image
has no PyTorch, so a model that does need it (``gatys``) fails with a message that names the
cause instead of an ``AttributeError``. The image build installs it only into the slim
variants (Dockerfile); the full variant has the real PyTorch.
"""

from __future__ import annotations

import sys
import types

#: TorchServe takes its modern code paths (PT2, profiler imports) from 2.0 on; "+stub" marks it.
__version__ = "2.0.0+stub"
STUB = True

_MESSAGE = ("this image has no PyTorch (the slim serving image: ONNX engines only); {what} needs it. "
            "Serve this model from the full image (Dockerfile, --target full).")


class Tensor:
    """Never instantiated: only ``isinstance(value, torch.Tensor)`` must work (always False)."""

    def __init__(self, *args, **kwargs):
        raise ImportError(_MESSAGE.format(what="torch.Tensor"))


def save(*args, **kwargs):
    raise ImportError(_MESSAGE.format(what="torch.save"))


def _false(*args, **kwargs) -> bool:
    return False


def _submodule(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(f"{__name__}.{name}")
    module.__dict__.update(attributes)
    sys.modules[module.__name__] = module
    return module


def _unsupported(what: str):
    def refuse(*args, **kwargs):
        raise ImportError(_MESSAGE.format(what=what))
    return refuse


cuda = _submodule("cuda", is_available=_false, device_count=lambda: 0)
xpu = _submodule("xpu", is_available=_false)
backends = _submodule("backends", mps=_submodule("backends.mps", is_available=_false))
profiler = _submodule("profiler", ProfilerActivity=types.SimpleNamespace(CPU="CPU", CUDA="CUDA"),
                      profile=_unsupported("the torch profiler (ENABLE_TORCH_PROFILER)"),
                      record_function=_unsupported("the torch profiler (ENABLE_TORCH_PROFILER)"),
                      tensorboard_trace_handler=_unsupported("the torch profiler (ENABLE_TORCH_PROFILER)"))


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(_MESSAGE.format(what=f"torch.{name}"))
