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


#: CPU flags (Linux /proc/cpuinfo) that mean bf16 is computed natively, not emulated (emulated is ~50x slower).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU reports (none off Linux, where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(f for f in BF16_CPU_FLAGS if f in flags)
    except OSError:
        pass
    return ()


def choose_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """The precision a run uses and why: ``auto`` is bf16 where the hardware computes bf16 natively (a CUDA GPU
    that supports it; a CPU with AVX-512 BF16 or AMX), else fp32. Anything else is used as asked."""
    if precision != "auto":
        return precision, "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {torch.cuda.get_device_name(device)} computes bf16 natively"
        return "fp32", "auto: this GPU has no native bf16"
    flags = cpu_bf16_flags()
    if flags:
        return "bf16", f"auto: this CPU computes bf16 natively ({', '.join(flags)}; about 1.8x faster steps)"
    return "fp32", "auto: this CPU has no native bf16 (AVX-512 BF16 or AMX), where bf16 is emulated and slow"


def configure_precision(device: torch.device, precision: str) -> None:
    """TF32 matmuls/convolutions on CUDA for ``tf32`` (bf16/fp16 use autocast in the objective)."""
    if device.type == "cuda":
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        torch.backends.cudnn.benchmark = True
    elif precision in ("tf32", "fp16"):
        raise ProviderError(f"--precision {precision} needs a CUDA device; on CPU use fp32 or bf16")
