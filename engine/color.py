"""Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer").

``luminance``: style transfer runs on luminance only and the result takes the content's colour (YIQ).
``histogram``: the style image's colours are first mapped to the content's mean and covariance.
All functions take and return (1, 3, H, W) float32 RGB tensors in [0, 1] and never modify their inputs.
"""

from __future__ import annotations

import torch

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _YIQ_TO_RGB.to(image), image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """The Y channel repeated to three channels: a gray image the RGB network can take."""
    return rgb_to_yiq(image)[:, :1].repeat(1, 3, 1, 1)


def recombine(styled_luma: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Y of the stylized (gray) result with I and Q of the content, back to RGB in [0, 1]."""
    y = rgb_to_yiq(styled_luma)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0.0, 1.0)


def _mean_cov(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = image[0].flatten(1).double()  # (3, M)
    mean = pixels.mean(dim=1, keepdim=True)
    centred = pixels - mean
    return mean, centred @ centred.T / pixels.shape[1] + 1e-5 * torch.eye(3, dtype=torch.float64)


def _sqrtm(matrix: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    values = values.clamp_min(1e-10).sqrt()
    return vectors @ torch.diag(1 / values if inverse else values) @ vectors.T


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Recolour ``style`` so its RGB mean and covariance equal ``content``'s (the paper's linear transfer)."""
    mean_s, cov_s = _mean_cov(style)
    mean_c, cov_c = _mean_cov(content)
    transform = _sqrtm(cov_c) @ _sqrtm(cov_s, inverse=True)
    pixels = style[0].flatten(1).double()
    mapped = transform @ (pixels - mean_s) + mean_c
    return mapped.reshape(style.shape).float().clamp(0.0, 1.0)


def chroma_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of the I and Q channels: how far apart two images' colours are."""
    return float((rgb_to_yiq(a)[:, 1:] - rgb_to_yiq(b)[:, 1:]).abs().mean())
