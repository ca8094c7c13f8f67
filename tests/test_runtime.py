"""ONNX Runtime provider choice: the best available, and clear reasons for the ones skipped."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from nst_engine.errors import ProviderError
from nst_engine.export import runtime


def test_auto_picks_the_best_offered_and_says_why_others_were_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    choice = runtime.choose("auto")
    assert choice.name == "cpu" and choice.precision == "fp32"
    assert [s.split(":")[0] for s in choice.skipped] == ["tensorrt", "cuda"]
    assert "onnxruntime-gpu" in choice.skipped[1] and "skipped tensorrt, cuda" in choice.describe()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.choose("auto").name == "cuda"
    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert runtime.choose("auto").name == "tensorrt"
    assert runtime.choose("tensorrt", fp16=True).precision == "fp16"


def test_unavailable_provider_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match=r"provider 'cuda' is not available.*onnxruntime-gpu"):
        runtime.choose("cuda")
    with pytest.raises(ProviderError, match="unknown provider 'gpu'"):
        runtime.choose("gpu")


def test_tensorrt_options_enable_fp16_and_engine_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    providers = runtime._provider_list(runtime.ProviderChoice("tensorrt", "fp16"), tmp_path)
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider" and options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
