"""Colour preservation for style transfer: keep the content's colours, take the style's texture.

This is the luminance-transfer idea of Gatys et al., "Preserving Color in Neural Artistic
Style Transfer" (2016), applied after stylization: brightness (Y) comes from the styled
image, chroma (Cb, Cr) from the original. Shared by the Gatys path and the fast styles.
"""

from __future__ import annotations

from PIL import Image


def preserve_colors(styled: Image.Image, original: Image.Image) -> Image.Image:
    """Returns ``styled`` recoloured with ``original``'s chroma, at ``styled``'s size.

    ``original`` is resized (bicubic) to match, since a fast network or a coarse-to-fine run
    may return a slightly different size than the upload.
    """
    luma, _, _ = styled.convert("YCbCr").split()
    if original.size != styled.size:
        original = original.resize(styled.size, Image.Resampling.BICUBIC)
    _, cb, cr = original.convert("YCbCr").split()
    return Image.merge("YCbCr", (luma, cb, cr)).convert("RGB")
