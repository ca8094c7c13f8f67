"""Synthetic clips whose motion is known: a window panned across a photo (every pixel moves by the same
(dx, dy) a frame, so the true flow from frame t to frame t+1 is (-dx, -dy) everywhere but at the border)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nst_engine import images

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "images"


def panned(
    frames: int, height: int, width: int, dx: int = 3, dy: int = 1, photo: str = "content_tubingen.jpg"
) -> list[np.ndarray]:
    """``frames`` (H, W, 3) uint8 crops of a sample photo, each ``dx`` px right and ``dy`` px down of the last."""
    rgb = images.read_image(SAMPLES / photo)
    need_h, need_w = height + dy * frames, width + dx * frames
    scale = max(need_h / rgb.shape[0], need_w / rgb.shape[1])
    import cv2

    size = (int(np.ceil(rgb.shape[1] * scale)), int(np.ceil(rgb.shape[0] * scale)))
    big = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    big = np.round(np.clip(big, 0, 1) * 255).astype(np.uint8)
    return [np.ascontiguousarray(big[t * dy : t * dy + height, t * dx : t * dx + width]) for t in range(frames)]


def write_frames(frames: list[np.ndarray], folder: Path) -> Path:
    """The frames as numbered PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{t + 1:03d}.png"), frame[:, :, ::-1])
    return folder
