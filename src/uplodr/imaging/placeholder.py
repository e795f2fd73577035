"""A placeholder a page shows while the image loads, computed from the decoded image.

    thumbhash   ThumbHash (~25 bytes, base64): colour, alpha and aspect ratio (`thumbhash`)
    blurhash    BlurHash (Wolt): 4x3 components (3x4 for portrait), via the PyPI `blurhash`
                package (pure Python, no Pillow pin)
    data_url    the ThumbHash rendered (32 px on the long side) as a PNG `data:` URL, for an
                `<img src>` or a CSS background that needs no JavaScript decoder

All three come from one small thumbnail (at most 32 px a side, first frame, already sRGB and
8-bit like every variant), so the cost does not grow with the photo: ~20-40 ms per image on one
core (bench/placeholders.py). Transparent images: ThumbHash keeps the alpha; BlurHash has none, so
its input is flattened onto the preset's JPEG background, like the JPEG variant.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

import blurhash
import pyvips

from uplodr.imaging import thumbhash

# Long side of the image the hashes are computed from: both keep only the lowest frequencies,
# so more pixels cost time without changing the hash.
SAMPLE_SIDE: Final = 32


@dataclass(frozen=True)
class Placeholder:
    thumbhash: str  # base64 of the ThumbHash bytes
    blurhash: str
    data_url: str  # data:image/png;base64,... (the ThumbHash rendered)

    def as_dict(self) -> dict[str, str]:
        return {"thumbhash": self.thumbhash, "blurhash": self.blurhash, "data_url": self.data_url}


def _rgba(image: pyvips.Image) -> pyvips.Image:
    """8-bit RGBA: grey spread to three bands, opaque alpha added when there is none."""
    if image.bands < 3:
        grey, alpha = image[0], image[1:] if image.bands == 2 else None
        image = grey.bandjoin([grey, grey])
        if alpha is not None:
            image = image.bandjoin(alpha)
    if image.bands == 3:
        image = image.bandjoin(255)
    return image.cast("uchar")


def make(image: pyvips.Image, background: tuple[int, int, int]) -> Placeholder:
    """The placeholder of `image` (one frame, 8-bit sRGB or grey, alpha last if any)."""
    small = image.thumbnail_image(SAMPLE_SIDE, height=SAMPLE_SIDE, size="down")
    rgba = _rgba(small)
    width, height = int(rgba.width), int(rgba.height)
    pixels = bytes(rgba.write_to_memory())
    hash_ = thumbhash.encode(width, height, pixels)

    opaque = rgba.flatten(background=list(background)) if rgba.hasalpha() else rgba[0:3]
    rgb = bytes(opaque.cast("uchar").write_to_memory())
    rows = [
        [list(rgb[3 * (y * width + x) : 3 * (y * width + x) + 3]) for x in range(width)]
        for y in range(height)
    ]
    x_components, y_components = (4, 3) if width >= height else (3, 4)
    blur: str = blurhash.encode(rows, x_components, y_components)

    w, h, rendered = thumbhash.render(hash_)
    png: bytes = pyvips.Image.new_from_memory(rendered, w, h, 4, "uchar").pngsave_buffer(
        compression=9, keep="none"
    )
    return Placeholder(
        thumbhash=base64.b64encode(hash_).decode("ascii"),
        blurhash=blur,
        data_url="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
    )
