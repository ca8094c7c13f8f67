"""Which feature model a run uses, and where the cache lives: plain values, read by every front door before
anything heavy is imported (``nst-engine --help`` and ``cache info`` start without torch)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

CACHE_ENV = "NST_ENGINE_CACHE"


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
