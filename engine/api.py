"""The file-level Python API, mirroring ``nst-engine stylize``.

With ``cli.py`` this is one of the two front doors that wire the engine to the ONNX side (``export``):
the rest of ``engine`` never imports ONNX Runtime; it is handed a target source instead.

    from engine.api import stylize_file
    result = stylize_file("photo.jpg", ["wave.jpg"], "out.png", weights="random", size=256, steps=100)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import images
from engine.config import StyleConfig
from engine.errors import ConfigError
from engine.optim.loop import Callback
from engine.stylize import StylizeResult, stylize
from engine.targets import DirectTargets, TargetSource
from engine.vgg import VGGFeatures

CACHE_ENV = "NST_ENGINE_CACHE"


def default_cache_dir() -> Path:
    """``$NST_ENGINE_CACHE``, else the platform's user cache directory (``~/.cache/nst-engine`` on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("nst-engine", appauthor=False))


@dataclass
class Model:
    """An ONNX feature model opened for a run: its metadata and weights, and an ONNX Runtime encoder."""

    info: Any  # export.model_file.ModelInfo
    encoder: Any  # export.runtime.OnnxEncoder
    exported: Any = None  # export.onnx_export.ExportReport when exported for this run

    @property
    def provider(self) -> str:
        return str(self.encoder.choice.name)

    @property
    def precision(self) -> str:
        return str(self.encoder.choice.precision)

    def torch_module(self, layers: Sequence[str]) -> VGGFeatures:
        net: VGGFeatures = self.info.torch_module(tuple(layers))
        return net


def model_path_for(
    cache_dir: Path,
    weights_sha256: str,
    layers: Sequence[str],
    pooling: str,
    network: str = "vgg19",
    convention: str = "torchvision",
) -> Path:
    from export.onnx_export import FORMAT_VERSION

    tag = hashlib.sha256(f"{','.join(layers)};{convention};format{FORMAT_VERSION}".encode()).hexdigest()[:8]
    return cache_dir / "models" / f"{network}-{weights_sha256[:16]}-{pooling}-{tag}.onnx"


def open_model(
    config: StyleConfig,
    *,
    model: str | Path | None = None,
    weights: str = "vgg19",
    provider: str = "auto",
    cache_dir: Path | None = None,
    on_export: Callable[[str], None] | None = None,
    network: str | None = None,
    input_convention: str | None = None,
) -> Model:
    """Open ``model``, or export one from ``weights`` into the cache (reused next time) and open that.

    ``network`` (vgg16 / vgg19) and ``input_convention`` (torchvision / caffe) are checked against, or tell, what
    the weights are: see ``engine.weights.resolve``.
    """
    from engine.weights import resolve
    from export.model_file import inspect
    from export.onnx_export import export
    from export.runtime import OnnxEncoder

    cache_dir = cache_dir or default_cache_dir()
    report = None
    if model is None:
        loaded = resolve(weights, network, input_convention)
        path = model_path_for(
            cache_dir, loaded.sha256, config.layers, config.pooling, loaded.network, loaded.convention
        )
        if not path.is_file():
            if on_export is not None:
                on_export(f"exporting the feature network ({loaded.label}) to {path}")
            report = export(loaded, path, config.layers, config.pooling)
        model = path
    info = inspect(model)
    if network is not None and info.network != network:
        raise ConfigError(f"model '{model}' is {info.network.upper()}, not {network.upper()}; drop --network")
    info.require(config.layers)
    if info.pooling != config.pooling:
        raise ConfigError(
            f"model '{model}' was exported with {info.pooling} pooling but --pooling {config.pooling} was asked; "
            f"re-export with --pooling {config.pooling} or drop --pooling"
        )
    encoder = OnnxEncoder(model, provider=provider, cache_dir=cache_dir)
    return Model(info, encoder, report)


def target_source(
    model: Model, cache_dir: Path | None, use_cache: bool = True, warn: Callable[[str], None] | None = None
) -> TargetSource:
    """Targets through the on-disk cache when ``use_cache``, else computed every time."""
    if not use_cache:
        return DirectTargets(model.encoder)
    from engine.cache import CachedTargets, TargetCache

    cache = TargetCache(cache_dir or default_cache_dir(), warn)
    return CachedTargets(model.encoder, cache, model.info.sha256, model.provider, model.precision, model.info.pooling)


def load_content(path: str | Path, config: StyleConfig) -> torch.Tensor:
    """The content image at the output size, as a (1, 3, H, W) tensor in [0, 1]."""
    return images.load(path, config.size, config.max_input_pixels)


def load_styles(paths: Sequence[str | Path], config: StyleConfig) -> list[torch.Tensor]:
    """Style images with their long side at ``size * style_scale``."""
    side = max(1, round(config.size * config.style_scale))
    return [images.load(p, side, config.max_input_pixels) for p in paths]


def stylize_file(
    content: str | Path,
    styles: str | Path | Sequence[str | Path],
    output: str | Path,
    config: StyleConfig | None = None,
    *,
    model: str | Path | None = None,
    weights: str = "vgg19",
    network: str | None = None,
    input_convention: str | None = None,
    provider: str = "auto",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    callback: Callback | None = None,
    **settings: Any,
) -> StylizeResult:
    """Stylize one image file with one or more style files and write ``output`` (PNG or JPEG) atomically.

    ``settings`` override fields of ``config`` (``size=256, steps=100`` ...), as CLI options do.
    """
    config = (config or StyleConfig()).replace(**settings)
    images.output_suffix(output)
    style_list = [styles] if isinstance(styles, (str, Path)) else list(styles)
    content_t, style_ts = load_content(content, config), load_styles(style_list, config)
    opened = open_model(
        config,
        model=model,
        weights=weights,
        provider=provider,
        cache_dir=cache_dir,
        network=network,
        input_convention=input_convention,
    )
    result = stylize(
        content_t,
        style_ts,
        config=config,
        net=opened.torch_module(config.layers),
        targets=target_source(opened, cache_dir, use_cache),
        callback=callback,
    )
    images.save(result.image, output)
    return result
