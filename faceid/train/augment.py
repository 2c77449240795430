"""On-the-fly augmentation of aligned chips for train_siamese.py (nothing is written to disk).

What the webcam verification apps do to multiply a few hundred captures (brightness, contrast,
saturation, mirror image, JPEG quality) plus the small affine jitter Koch et al. used (rotation,
scale, translation). Every draw comes from the generator passed in, so a seed fixes them all.
The chips stay aligned faces: the jitter is a few degrees and pixels, not a new pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    brightness: float = 0.15  # +- share of the full range added to every pixel
    contrast: float = 0.3  # factor drawn from [1 - c, 1 + c] around each chip's mean
    saturation: float = 0.3  # factor drawn from [1 - s, 1 + s] around each pixel's grey
    flip: float = 0.5  # chance of the mirror image
    rotation: float = 8.0  # +- degrees
    scale: float = 0.06  # +- share
    translation: float = 0.04  # +- share of the chip side
    jpeg: tuple[int, int] = (40, 95)  # JPEG quality range, applied to half the chips
    jpeg_share: float = 0.5

    def apply(self, chips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(n, s, s, 3) uint8`` -> augmented copies, same shape and dtype."""
        import cv2

        out = np.empty_like(chips)
        size = chips.shape[1]
        for index, chip in enumerate(chips):
            image = np.ascontiguousarray(chip)
            if rng.random() < self.flip:
                image = image[:, ::-1]
            angle = rng.uniform(-self.rotation, self.rotation)
            scale = 1.0 + rng.uniform(-self.scale, self.scale)
            shift = rng.uniform(-self.translation, self.translation, 2) * size
            matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
            matrix[:, 2] += shift
            image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
            grey = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            image = grey[..., None] + (image - grey[..., None]) * rng.uniform(1 - self.saturation, 1 + self.saturation)
            mean = image.mean()
            image = mean + (image - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast)
            image += rng.uniform(-self.brightness, self.brightness) * 255.0
            image = np.clip(image, 0, 255).astype(np.uint8)
            if rng.random() < self.jpeg_share:
                quality = int(rng.integers(self.jpeg[0], self.jpeg[1] + 1))
                ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
                if ok:
                    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
            out[index] = image
        return out
