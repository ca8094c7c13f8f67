"""Torch device choice and per-device speed settings."""

from __future__ import annotations

import torch

from nst_engine.errors import ProviderError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if torch sees a GPU, else CPU; an explicit unavailable device is a ProviderError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ProviderError(f"--device cuda: torch {torch.__version__} ({build}) sees no GPU; use --device cpu")
        return torch.device("cuda")
    raise ProviderError(f"unknown device '{name}'; choose auto, cpu or cuda")


def configure_precision(device: torch.device, precision: str) -> None:
    """TF32 matmuls/convolutions on CUDA for ``tf32`` (bf16/fp16 use autocast in the objective)."""
    if device.type == "cuda":
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        torch.backends.cudnn.benchmark = True
    elif precision in ("tf32", "fp16"):
        raise ProviderError(f"--precision {precision} needs a CUDA device; on CPU use fp32 or bf16")
