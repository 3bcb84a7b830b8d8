"""Image files decoded to 8-bit RGB, faithfully or not at all: the one place that opens an image file.

PIL's `convert("RGB")` clips 16-bit grayscale to white and guesses for modes without a fixed range;
those are scaled here or refused with the file's name. Images beyond PIL's decompression-bomb limit
are refused before they are decoded (PIL would only warn below twice the limit).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from droptune.errors import DroptuneError

# Modes whose conversion to RGB keeps every value: palettes, alpha (dropped, as DomainBed's loader does),
# 8-bit colour spaces and bilevel images.
CONVERTIBLE = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class UnreadableImage(DroptuneError):
    """Constructible from its message alone, as a loader worker re-raises it in the training process."""

    reason = ""

    @classmethod
    def of(cls, path: str | os.PathLike, reason: str) -> UnreadableImage:
        error = cls(f"cannot read image {path}: {reason}")
        error.reason = reason
        return error


def read_rgb(path: str | os.PathLike, shrink_to: int | None = None) -> Image.Image:
    """The image at `path` as 8-bit RGB; one that cannot be decoded faithfully raises UnreadableImage.

    `shrink_to`: the caller resizes the whole image to this side next, so a JPEG may be decoded at a
    reduced scale (no smaller than that).
    """
    try:
        with Image.open(path) as image:
            # PIL only warns below twice its limit, and a warning in a loader worker or a verifying thread is
            # lost; checked here rather than by a warnings filter, which would change the caller's own PIL use.
            if Image.MAX_IMAGE_PIXELS and image.width * image.height > Image.MAX_IMAGE_PIXELS:
                raise UnreadableImage.of(path, f"too large to decode safely ({image.width}x{image.height} pixels, "
                                               f"more than PIL's Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS})")
            if shrink_to is not None:
                image.draft("RGB", (shrink_to, shrink_to))
            return to_rgb(image, path)
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage.of(path, f"too large to decode safely ({error})") from None
    except Exception as error:  # noqa: BLE001 - decoders fail with many types (OSError, SyntaxError, struct.error)
        raise UnreadableImage.of(path, str(error) or type(error).__name__) from None


def to_rgb(image: Image.Image, path: str | os.PathLike) -> Image.Image:
    if image.mode in CONVERTIBLE:
        return image.convert("RGB")
    if image.mode in SIXTEEN_BIT:
        pixels = np.asarray(image, dtype=np.float32)
        return Image.fromarray(np.rint(pixels / 257).astype(np.uint8), "L").convert("RGB")
    raise UnreadableImage.of(path, f"its mode {image.mode} cannot be read faithfully as 8-bit RGB (expected "
                                "8- or 16-bit grayscale, palette, RGB(A), CMYK or YCbCr)")
