"""The five-landmark convention every face module shares, and its argument check.

Five (x, y) points in pixels, in MTCNN's order: the image-left eye centre, the image-right
eye centre, the nose tip, the image-left and the image-right mouth corner.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_landmarks(lm5: Any) -> np.ndarray:
    """`lm5` as a float64 (5, 2) array; ValueError for anything else (a caller's bug)."""
    try:
        points = np.asarray(lm5, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"landmarks must be numbers of shape (5, 2): {e}") from None
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {points.shape}")
    return points
