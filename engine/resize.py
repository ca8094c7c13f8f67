"""The one resizing helper: images and masks as (N, C, H, W) tensors, and the long-side arithmetic."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def fit_long_side(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is ``long_side``, aspect ratio kept, each side at least 1."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: torch.Tensor, height: int, width: int, kind: Literal["image", "mask"] = "image") -> torch.Tensor:
    """Resize a (N, C, H, W) tensor in [0, 1] and keep it in [0, 1].

    Images: antialiased bicubic when shrinking (no aliasing of fine texture), bicubic when enlarging. Masks:
    area averaging when shrinking, so a region's weight at a coarse layer is the fraction of it the mask covers,
    and bilinear when enlarging, which cannot overshoot.
    """
    if tuple(image.shape[-2:]) == (height, width):
        return image
    shrinking = height * width < image.shape[-2] * image.shape[-1]
    if kind == "mask":
        mode = "area" if shrinking else "bilinear"
        corners = {} if shrinking else {"align_corners": False}
        return F.interpolate(image, size=(height, width), mode=mode, **corners).contiguous()
    out = F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking)
    # A 1x1 input is both contiguous and channels-last, and interpolate may answer in the latter: callers view.
    return out.clamp(0.0, 1.0).contiguous()


def resize_long(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """``image`` with its long side at ``long_side`` pixels, aspect ratio kept."""
    return resize(image, *fit_long_side(int(image.shape[-2]), int(image.shape[-1]), long_side))
