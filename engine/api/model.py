"""Opening the feature model a run needs: an exported ONNX file, or one exported from weights into the cache.

This is where the front doors (the CLI, the page, the API) join the engine's core to ``export``: the core never
imports ONNX Runtime or the exporter. A ``Session`` is handed ``open_model`` as its opener, and gets back a model
that gives it a torch module, a target source and what the trace records (``nst_engine.session.OpenedModel``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nst_engine.cache import CachedTargets, TargetCache
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.export.model_file import ModelInfo, inspect
from nst_engine.export.onnx_export import FORMAT_VERSION, ExportReport, export
from nst_engine.export.runtime import OnnxEncoder
from nst_engine.spec import ModelSpec
from nst_engine.targets import DirectTargets, TargetSource
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import resolve

__all__ = ["Model", "ModelSpec", "model_path_for", "open_model", "target_source"]


@dataclass
class Model:
    """An ONNX feature model opened for a run: its metadata and weights, and an ONNX Runtime encoder."""

    info: ModelInfo
    encoder: OnnxEncoder
    exported: ExportReport | None = None  # when exported for this run

    @property
    def provider(self) -> str:
        return str(self.encoder.choice.name)

    @property
    def precision(self) -> str:
        return str(self.encoder.choice.precision)

    def torch_module(self, layers: Sequence[str]) -> VGGFeatures:
        return self.info.torch_module(tuple(layers))

    def describe(self) -> str:
        """Where the targets run (the provider and why), for the terminal and the trace."""
        return str(self.encoder.choice.describe())

    def targets(self, spec: ModelSpec, warn: Callable[[str], None] | None = None) -> TargetSource:
        return target_source(self, spec, warn)


def model_path_for(
    cache_dir: Path,
    weights_sha256: str,
    layers: Sequence[str],
    pooling: str,
    network: str = "vgg19",
    convention: str = "torchvision",
) -> Path:
    """Where the cache keeps the model exported from these weights for these layers and pooling."""
    tag = hashlib.sha256(f"{','.join(layers)};{convention};format{FORMAT_VERSION}".encode()).hexdigest()[:8]
    return cache_dir / "models" / f"{network}-{weights_sha256[:16]}-{pooling}-{tag}.onnx"


def open_model(config: StyleConfig, spec: ModelSpec, on_export: Callable[[str], None] | None = None) -> Model:
    """Open ``spec.model``, or export one from ``spec.weights`` into the cache (reused next time) and open that."""
    report = None
    path = spec.model
    if path is None:
        loaded = resolve(spec.weights, spec.network, spec.input_convention)
        path = model_path_for(
            spec.cache, loaded.sha256, config.layers, config.pooling, loaded.network, loaded.convention
        )
        if not path.is_file():
            TargetCache(spec.cache).claim()
            if on_export is not None:
                on_export(f"exporting the feature network ({loaded.label}) to {path}")
            report = export(loaded, path, config.layers, config.pooling)
    info = inspect(path)
    if spec.network is not None and info.network != spec.network:
        raise ConfigError(f"model '{path}' is {info.network.upper()}, not {spec.network.upper()}; drop --network")
    info.require(config.layers)
    if info.pooling != config.pooling:
        raise ConfigError(
            f"model '{path}' was exported with {info.pooling} pooling but --pooling {config.pooling} was asked; "
            f"re-export with --pooling {config.pooling} or drop --pooling"
        )
    return Model(info, OnnxEncoder(path, provider=spec.provider, cache_dir=spec.cache), report)


def target_source(model: Model, spec: ModelSpec, warn: Callable[[str], None] | None = None) -> TargetSource:
    """Targets through the on-disk cache when ``spec.use_cache``, else computed every time."""
    if not spec.use_cache:
        return DirectTargets(model.encoder)
    cache = TargetCache(spec.cache, warn)
    return CachedTargets(model.encoder, cache, model.info.sha256, model.provider, model.precision, model.info.pooling)
