"""Feature-forward backends: each either runs the network or says why it cannot here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
import torch

from nst_engine.vgg import VGGFeatures

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Backend:
    name: str
    device: str  # "cpu" or "cuda": where the timed work runs
    make: Callable[[VGGFeatures, Path], Forward]
    needs: Callable[[], str | None]  # None when available, else the reason it is not


def _no_cuda() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device visible to torch"


def _ort_needs(provider: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if provider not in ort.get_available_providers():
            return f"{provider} not in this onnxruntime build ({ort.__version__}); needs onnxruntime-gpu"
        return None

    return check


def _torch(device: str, precision: str = "fp32", channels_last: bool = False, compile_: bool = False):  # type: ignore[no-untyped-def]
    def make(net: VGGFeatures, model: Path) -> Forward:
        module = net.to(device)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        run: Forward = torch.compile(module) if compile_ else module
        tf32 = precision == "tf32"
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True

        def forward(image: torch.Tensor) -> dict[str, torch.Tensor]:
            x = image.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                if precision == "bf16":
                    with torch.autocast(device_type=device, dtype=torch.bfloat16):
                        return {k: v.float() for k, v in run(x).items()}
                return run(x)

        return forward

    return make


def _ort(provider: str, fp16: bool = False):  # type: ignore[no-untyped-def]
    def make(net: VGGFeatures, model: Path) -> Forward:
        from nst_engine.export.runtime import OnnxEncoder

        name = {
            "CPUExecutionProvider": "cpu",
            "CUDAExecutionProvider": "cuda",
            "TensorrtExecutionProvider": "tensorrt",
        }[provider]
        encoder = OnnxEncoder(model, provider=name, fp16=fp16)
        return encoder

    return make


BACKENDS: tuple[Backend, ...] = (
    Backend("torch eager fp32 (CPU)", "cpu", _torch("cpu"), lambda: None),
    Backend("torch channels_last (CPU)", "cpu", _torch("cpu", channels_last=True), lambda: None),
    Backend("torch.compile (CPU)", "cpu", _torch("cpu", compile_=True), lambda: None),
    Backend("ONNX Runtime CPU", "cpu", _ort("CPUExecutionProvider"), _ort_needs("CPUExecutionProvider")),
    Backend("ONNX Runtime CUDA", "cuda", _ort("CUDAExecutionProvider"), _ort_needs("CUDAExecutionProvider")),
    Backend(
        "ONNX Runtime TensorRT fp32", "cuda", _ort("TensorrtExecutionProvider"), _ort_needs("TensorrtExecutionProvider")
    ),
    Backend(
        "ONNX Runtime TensorRT fp16",
        "cuda",
        _ort("TensorrtExecutionProvider", fp16=True),
        _ort_needs("TensorrtExecutionProvider"),
    ),
    Backend("torch CUDA fp32", "cuda", _torch("cuda"), _no_cuda),
    Backend("torch CUDA TF32", "cuda", _torch("cuda", "tf32"), _no_cuda),
    Backend("torch CUDA bf16", "cuda", _torch("cuda", "bf16", channels_last=True), _no_cuda),
)
