"""Avatar images drawn with OpenCV for tests: two cartoon faces that MediaPipe's face mesh misses
(an anime-style one and a round mascot) and a dog's face (no dog photo with a clear licence was
found in a registry package). Deterministic: the same pixels on every run. Each function returns
the image (H x W x 3 BGR uint8) and the square (x, y, size) that frames its face, in image
pixels."""
from __future__ import annotations

import cv2
import numpy as np

AA = cv2.LINE_AA


def cartoon_face(width: int = 640, height: int = 560) -> tuple[np.ndarray, tuple[float, float, float]]:
    """An anime-style face: flat skin, a pointed chin, bangs, big eyes set low with highlights, a
    tiny mouth and no nose, on a two-tone background. The big low eyes are what the face mesh
    misses (drawn smaller and higher, it finds the face): checked at 480-1600 px wide; at 400 px
    wide it finds it again."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (235, 206, 170)                                   # light blue sky
    img[int(height * 0.75):] = (120, 170, 120)                # green ground
    cx, cy, r = width // 2, int(height * 0.48), int(min(width, height) * 0.28)
    skin, outline = (190, 215, 250), (60, 50, 50)
    cv2.ellipse(img, (cx, cy + r + 40), (int(r * 0.9), 60), 0, 180, 360, (90, 60, 200), -1, AA)   # shoulders
    head = cv2.ellipse2Poly((cx, cy), (r, int(r * 0.95)), 0, 180, 360, 5).tolist()
    head += [[cx + r, cy], [cx + int(r * 0.75), cy + int(r * 0.7)], [cx, cy + int(r * 1.15)],
             [cx - int(r * 0.75), cy + int(r * 0.7)], [cx - r, cy]]
    cv2.fillPoly(img, [np.array(head, np.int32)], skin, AA)
    cv2.polylines(img, [np.array(head, np.int32)], True, outline, 3, AA)
    hair = np.array([[cx - r - 15, cy + 10], [cx - r + 5, cy - r - 30], [cx, cy - r - 50], [cx + r - 5, cy - r - 30],
                     [cx + r + 15, cy + 10], [cx + r - 20, cy - r // 3], [cx + r // 2, cy - r // 4],
                     [cx + r // 4, cy - r // 2], [cx, cy - r // 4], [cx - r // 4, cy - r // 2],
                     [cx - r // 2, cy - r // 4], [cx - r + 20, cy - r // 3]], np.int32)
    cv2.fillPoly(img, [hair], (200, 80, 140), AA)             # purple bangs
    for side in (-1, 1):
        ex, ey = cx + side * int(r * 0.45), cy + int(r * 0.3)
        ax = (int(r * 0.36), int(r * 0.5))
        cv2.ellipse(img, (ex, ey), ax, 0, 0, 360, (255, 255, 255), -1, AA)
        cv2.ellipse(img, (ex, ey + 4), (int(ax[0] * 0.8), int(ax[1] * 0.85)), 0, 0, 360, (180, 120, 40), -1, AA)
        cv2.ellipse(img, (ex, ey + 8), (int(ax[0] * 0.45), int(ax[1] * 0.5)), 0, 0, 360, (20, 20, 20), -1, AA)
        cv2.circle(img, (ex - ax[0] // 3, ey - ax[1] // 3), int(ax[0] * 0.3), (255, 255, 255), -1, AA)
        cv2.ellipse(img, (ex, ey), ax, 0, 190, 350, outline, 6, AA)
    cv2.ellipse(img, (cx, cy + int(r * 0.75)), (int(r * 0.08), int(r * 0.05)), 0, 0, 180, outline, 3, AA)
    side_px = 2.6 * r
    return img, (cx - side_px / 2, cy - side_px / 2, side_px)


def dog_face(width: int = 600, height: int = 600) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A dog's face from the front: brown head with a lighter muzzle, floppy ears, dark eyes and a
    big black nose, on a grey wall. Its face box frames the head with the ears."""
    img = np.full((height, width, 3), (170, 175, 180), np.uint8)
    cx, cy, r = width // 2, int(height * 0.5), int(min(width, height) * 0.24)
    fur, light = (40, 90, 150), (150, 190, 225)
    for side in (-1, 1):
        ear = np.array([[cx + side * int(r * 0.6), cy - int(r * 0.9)], [cx + side * int(r * 1.45), cy - int(r * 0.6)],
                        [cx + side * int(r * 1.35), cy + int(r * 0.6)], [cx + side * int(r * 1.0), cy + int(r * 0.2)]],
                       np.int32)
        cv2.fillPoly(img, [ear], (25, 55, 95), AA)
    cv2.ellipse(img, (cx, cy), (r, int(r * 1.05)), 0, 0, 360, fur, -1, AA)
    cv2.ellipse(img, (cx, cy + int(r * 0.5)), (int(r * 0.55), int(r * 0.45)), 0, 0, 360, light, -1, AA)
    for side in (-1, 1):
        ex, ey = cx + side * int(r * 0.4), cy - int(r * 0.15)
        cv2.circle(img, (ex, ey), int(r * 0.13), (30, 30, 40), -1, AA)
        cv2.circle(img, (ex - 4, ey - 4), int(r * 0.04), (240, 240, 240), -1, AA)
    cv2.ellipse(img, (cx, cy + int(r * 0.3)), (int(r * 0.2), int(r * 0.13)), 0, 0, 360, (20, 20, 20), -1, AA)
    cv2.line(img, (cx, cy + int(r * 0.4)), (cx, cy + int(r * 0.62)), (20, 20, 20), 3, AA)
    cv2.ellipse(img, (cx, cy + int(r * 0.62)), (int(r * 0.22), int(r * 0.1)), 0, 0, 180, (20, 20, 20), 3, AA)
    side_px = 2.3 * r
    return img, (cx - side_px / 2, cy - side_px / 2 - 0.05 * side_px, side_px)


def mascot_face(width: int = 640, height: int = 720) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A round mascot head (oval eyes, a smile, a tuft of hair) on a pastel striped background, its
    face centred at about (0.5 W, 0.42 H) with a radius of 0.31 min(W, H); the window's face box
    editor and its README screenshot use it."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (235, 215, 190)                                 # pale blue background
    for i in range(0, width + height, 40):                   # soft diagonal stripes
        cv2.line(img, (i, 0), (i - height, height), (225, 200, 175), 12, AA)
    s = min(width, height) / 640
    cx, cy = width // 2, int(height * 0.42)

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(cx + x * s), int(cy + y * s)

    def ax(a: float, b: float) -> tuple[int, int]:
        return int(a * s), int(b * s)

    skin, outline, hair = (80, 200, 250), (40, 30, 60), (60, 50, 140)
    cv2.ellipse(img, pt(0, 330), ax(220, 60), 0, 180, 360, (90, 140, 60), -1, AA)      # shoulders
    cv2.ellipse(img, pt(0, -200), ax(30, 60), 20, 0, 360, hair, -1, AA)               # tuft
    cv2.ellipse(img, pt(-40, -190), ax(22, 45), -25, 0, 360, hair, -1, AA)
    cv2.circle(img, pt(0, 0), int(200 * s), skin, -1, AA)                             # head
    cv2.circle(img, pt(0, 0), int(200 * s), outline, 5, AA)
    for side in (-1, 1):
        cv2.ellipse(img, pt(side * 80, -10), ax(28, 60), 0, 0, 360, outline, -1, AA)   # eyes
        cv2.circle(img, pt(side * 80 + 8, -40), int(10 * s), (255, 255, 255), -1, AA)
        cv2.ellipse(img, pt(side * 135, 70), ax(30, 16), 0, 0, 360, (120, 140, 250), -1, AA)   # cheeks
    cv2.ellipse(img, pt(0, 70), ax(110, 70), 0, 10, 170, outline, 8, AA)              # smile
    side_px = 2.3 * 200 * s
    return img, (cx - side_px / 2, cy - side_px / 2, side_px)
