"""Real photos that need no download: the parity check, calibration and benchmarks use them.

Kept apart from the export code so a process that only needs a photo (an ONNX Runtime
benchmark case, say) does not import torch.
"""

from __future__ import annotations

from pathlib import Path


def default_parity_photo() -> Path:
    """A real photo that ships with matplotlib (Grace Hopper), so the check works anywhere."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
