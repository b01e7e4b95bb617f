"""The object-box picker: the upload drawn large enough to click, with the box or its first corner marked."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from attnviz.app.render.draw import MASK_COLOUR, as_rgb, marker, resize


def picker_image(image: np.ndarray, side: int = 384) -> tuple[np.ndarray, float]:
    """The upload drawn with its longer side at ``side`` px (tiny scenes scaled up, sharp), for clicking
    an object box; returns the picture and its scale (picture px per upload px)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return resize(as_rgb(image), size, nearest=scale >= 2).copy(), scale


def mark_picker(picture: np.ndarray, scale: float, box: Sequence[int] | None = None,
                first: Sequence[int] | None = None) -> np.ndarray:
    """The box picker with the object box (upload pixels, x0 y0 x1 y1) or its first corner marked."""
    out = picture.copy()
    if box is not None:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 0, 0), 3)
        cv2.rectangle(out, (x0, y0), (x1, y1), MASK_COLOUR, 1)
    if first is not None:
        out = marker(out, ((first[0] + 0.5) * scale / out.shape[1], (first[1] + 0.5) * scale / out.shape[0]),
                     MASK_COLOUR)
    return out
