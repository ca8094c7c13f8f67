"""ONNX Runtime feature encoder with the torch module's call shape: image tensor in, ``{layer: tensor}`` out.

Provider choice: ``auto`` takes TensorRT, then CUDA, then CPU, whichever this onnxruntime build offers and
can actually start; an explicit choice that is unavailable is an error that says why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from nst_engine.errors import ModelError, ProviderError, did_you_mean

PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


@dataclass(frozen=True)
class ProviderChoice:
    name: str  # "tensorrt", "cuda" or "cpu": what will run
    precision: str  # numbers it computes in: "fp32", or "fp16" for TensorRT with fp16 on
    skipped: tuple[str, ...] = field(default=())  # "cuda: reason" for each better one passed over

    def describe(self) -> str:
        """One line for the terminal; the full reasons are in ``skipped`` (and the trace)."""
        text = f"ONNX Runtime provider: {self.name} ({self.precision})"
        if self.skipped:
            names = ", ".join(s.split(":")[0] for s in self.skipped)
            text += f"; skipped {names} (not in this onnxruntime build: pip install 'nst-engine[gpu]')"
        return text


def unavailable_reason(name: str) -> str | None:
    """Why provider ``name`` cannot be used in this process, or None if it is offered."""
    if PROVIDERS[name] in ort.get_available_providers():
        return None
    if name == "cpu":
        return "this onnxruntime build has no CPU provider"
    return (
        f"this onnxruntime build ({ort.__version__}, package '{_ort_package()}') has no {PROVIDERS[name]}; "
        "install nst-engine[gpu] (onnxruntime-gpu) on a machine with CUDA"
        + (" and TensorRT" if name == "tensorrt" else "")
    )


def _ort_package() -> str:
    device = ort.get_device()
    return "onnxruntime-gpu" if device == "GPU" else "onnxruntime"


def choose(provider: str = "auto", fp16: bool = False) -> ProviderChoice:
    """Resolve ``auto|cpu|cuda|tensorrt`` to a provider this build offers."""
    if provider not in ("auto", *PROVIDERS):
        hint = did_you_mean(provider, ("auto", "cpu", "cuda", "tensorrt"))
        raise ProviderError(f"unknown provider '{provider}';{hint} choose auto, cpu, cuda or tensorrt")
    if provider != "auto":
        reason = unavailable_reason(provider)
        if reason:
            raise ProviderError(f"provider '{provider}' is not available: {reason}; or pass --provider auto")
        return ProviderChoice(provider, "fp16" if fp16 and provider == "tensorrt" else "fp32")
    skipped: list[str] = []
    for name in AUTO_ORDER:
        reason = unavailable_reason(name)
        if reason is None:
            return ProviderChoice(name, "fp16" if fp16 and name == "tensorrt" else "fp32", tuple(skipped))
        skipped.append(f"{name}: {reason}")
    raise ProviderError("no ONNX Runtime provider is available; reinstall onnxruntime")


def _provider_list(choice: ProviderChoice, cache_dir: Path | None) -> list[Any]:
    if choice.name == "tensorrt":
        options: dict[str, Any] = {"trt_fp16_enable": choice.precision == "fp16"}
        if cache_dir is not None:
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir / "tensorrt"))
        return [(PROVIDERS["tensorrt"], options), PROVIDERS["cuda"], PROVIDERS["cpu"]]
    if choice.name == "cuda":
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    return [PROVIDERS["cpu"]]


THREADS_ENV = "NST_ENGINE_ORT_THREADS"


def ort_threads() -> int:
    """``$NST_ENGINE_ORT_THREADS``: ONNX Runtime's intra-op threads (0, the default, lets it choose)."""
    text = os.environ.get(THREADS_ENV, "0").strip() or "0"
    if not text.isdigit() or int(text) > 4096:
        raise ProviderError(f"{THREADS_ENV}={text!r} must be a whole number of threads (0: ONNX Runtime chooses)")
    return int(text)


class OnnxEncoder:
    """Runs an exported feature model. Call with a (N, 3, H, W) float tensor in [0, 1]; returns float32 tensors."""

    def __init__(
        self,
        path: str | Path,
        provider: str = "auto",
        fp16: bool = False,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.choice = choose(provider, fp16)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings are not for our users
        options.intra_op_num_threads = threads or ort_threads()
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=_provider_list(self.choice, cache_dir)
            )
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load '{self.path}': {str(exc).splitlines()[0][:200]}") from exc
        active = self.session.get_providers()[0]
        if active != PROVIDERS[self.choice.name]:
            # The provider was offered but failed to start (missing CUDA/TensorRT libraries): say so.
            fallback = next(k for k, v in PROVIDERS.items() if v == active)
            self.choice = ProviderChoice(
                fallback, "fp32", (*self.choice.skipped, f"{self.choice.name}: it failed to start (libraries missing?)")
            )
            if provider not in ("auto", fallback):
                raise ProviderError(
                    f"provider '{provider}' is offered but failed to start (CUDA/TensorRT libraries missing?); "
                    "pass --provider auto or cpu"
                )
        self.input_name = self.session.get_inputs()[0].name
        self.layers: tuple[str, ...] = tuple(o.name for o in self.session.get_outputs())
        self.forward_count = 0

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        array = np.ascontiguousarray(image.detach().float().cpu().numpy())
        outputs: Sequence[np.ndarray] = self.session.run(None, {self.input_name: array})
        self.forward_count += 1
        return {name: torch.from_numpy(np.asarray(out)) for name, out in zip(self.layers, outputs, strict=True)}
