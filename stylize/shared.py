"""What the CLI shares with the TorchServe handler: the same options, finishing and
ONNX Runtime settings, from ``core`` (no TorchServe import needed)."""

from __future__ import annotations

from core.onnx_session import providers, session_options
from core.style_options import PARAMS, finish

__all__ = ["PARAMS", "finish", "providers", "session_options"]
