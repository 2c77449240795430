"""Photo -> pencil-sketch synthesis (photo2sketch.py), for data enlargement and for looking at.

The classic "colour dodge" pencil sketch: the greyscale photo divided by the inverse of a blurred
negative of itself. Flat regions go white, edges (the lines an artist draws) stay dark, and a
little of the photo's shading is kept by mixing the dodge with the darkened greyscale, as the
CUHK artists shade hair and cheeks. The output has the photo's size, is greyscale (returned as
RGB with three equal channels so every reader and backbone takes it) and is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceid.backbones.registry import GREY_WEIGHTS


@dataclass(frozen=True)
class SketchStyle:
    """How a photo becomes a sketch."""

    # Gaussian blur of the negative, as a share of the image's shorter side: larger = broader strokes.
    blur: float = 0.04
    # Share of the (darkened) photo's shading mixed into the dodge: 0 = lines only.
    shading: float = 0.25
    # Gamma on the dodge: > 1 darkens the strokes.
    gamma: float = 1.6


def greyscale(image_rgb: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` -> luminance ``float32`` in [0, 255] (a greyscale image passes through)."""
    image = np.asarray(image_rgb)
    if image.ndim == 2:
        return image.astype(np.float32)
    return image[..., :3].astype(np.float32) @ GREY_WEIGHTS


def photo_to_sketch(image_rgb: np.ndarray, style: SketchStyle = SketchStyle()) -> np.ndarray:
    """A pencil-sketch rendering of ``image_rgb``: ``(h, w, 3) uint8``, three equal channels."""
    import cv2

    grey = greyscale(image_rgb)
    sigma = max(0.5, style.blur * min(grey.shape[:2]))
    blurred_negative = cv2.GaussianBlur(255.0 - grey, (0, 0), sigmaX=sigma, sigmaY=sigma)
    dodge = np.clip(grey * 255.0 / np.maximum(255.0 - blurred_negative, 1.0), 0.0, 255.0)
    lines = 255.0 * np.power(dodge / 255.0, style.gamma)
    shaded = (1.0 - style.shading) * lines + style.shading * (lines * grey / 255.0)
    sketch = np.clip(np.rint(shaded), 0, 255).astype(np.uint8)
    return np.repeat(sketch[..., None], 3, axis=2)
