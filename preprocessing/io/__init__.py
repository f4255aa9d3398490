"""Image IO behind one reader/writer interface chosen by file ending.

Every read returns ``(array, geometry)`` with the array channel-first: (C, z, y, x) for volumes,
(C, y, x) for 2D images. Every write takes the same and restores the geometry exactly.
"""

from preprocessing.io.registry import (
    SUPPORTED_ENDINGS,
    ImageIO,
    ending_of,
    io_for,
    read_image,
    write_image,
)

__all__ = ["SUPPORTED_ENDINGS", "ImageIO", "ending_of", "io_for", "read_image", "write_image"]
