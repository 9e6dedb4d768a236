"""A cartoon face drawn with OpenCV, deterministic: an avatar MediaPipe's face mesh does not find
(the window's face box editor and its screenshot use it)."""
from __future__ import annotations

import cv2
import numpy as np

LINE = cv2.LINE_AA


def cartoon_face(width: int = 640, height: int = 720) -> np.ndarray:
    """H x W x 3 uint8 BGR: a round mascot head (oval eyes, a smile, a tuft of hair) on a pastel
    striped background, its face centred at about (0.5 W, 0.42 H) with a radius of 0.31 min(W, H)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (235, 215, 190)                                 # pale blue background
    for i in range(0, width + height, 40):                   # soft diagonal stripes
        cv2.line(img, (i, 0), (i - height, height), (225, 200, 175), 12, LINE)
    s = min(width, height) / 640
    cx, cy = width // 2, int(height * 0.42)

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(cx + x * s), int(cy + y * s)

    def ax(a: float, b: float) -> tuple[int, int]:
        return int(a * s), int(b * s)

    skin, outline, hair = (80, 200, 250), (40, 30, 60), (60, 50, 140)
    cv2.ellipse(img, pt(0, 330), ax(220, 60), 0, 180, 360, (90, 140, 60), -1, LINE)      # shoulders
    cv2.ellipse(img, pt(0, -200), ax(30, 60), 20, 0, 360, hair, -1, LINE)               # tuft
    cv2.ellipse(img, pt(-40, -190), ax(22, 45), -25, 0, 360, hair, -1, LINE)
    cv2.circle(img, pt(0, 0), int(200 * s), skin, -1, LINE)                             # head
    cv2.circle(img, pt(0, 0), int(200 * s), outline, 5, LINE)
    for side in (-1, 1):
        cv2.ellipse(img, pt(side * 80, -10), ax(28, 60), 0, 0, 360, outline, -1, LINE)   # eyes
        cv2.circle(img, pt(side * 80 + 8, -40), int(10 * s), (255, 255, 255), -1, LINE)
        cv2.ellipse(img, pt(side * 135, 70), ax(30, 16), 0, 0, 360, (120, 140, 250), -1, LINE)   # cheeks
    cv2.ellipse(img, pt(0, 70), ax(110, 70), 0, 10, 170, outline, 8, LINE)              # smile
    return img
