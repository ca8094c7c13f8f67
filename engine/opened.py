"""What the core knows of a feature model that a front door opened: the torch module the optimisation runs, the
source of its fixed targets, and what the trace records of it. The core never opens one itself (no ONNX Runtime, no
exporter): ``nst_engine.api.model.open_model`` is the opener the front doors hand over."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from nst_engine.config import StyleConfig
from nst_engine.spec import ModelSpec
from nst_engine.targets import TargetSource
from nst_engine.vgg import VGGFeatures

__all__ = ["ModelFacts", "OpenedModel", "Opener"]


class ModelFacts(Protocol):
    """What a trace records of an opened model file."""

    @property
    def path(self) -> Path: ...
    @property
    def sha256(self) -> str: ...
    @property
    def weights(self) -> str: ...
    @property
    def weights_label(self) -> str: ...
    @property
    def pretrained(self) -> bool: ...
    @property
    def meta(self) -> Mapping[str, Any]: ...
    @property
    def network(self) -> str: ...
    @property
    def convention(self) -> str: ...
    @property
    def feature_scale(self) -> float: ...


class OpenedModel(Protocol):
    """A feature model opened by a front door: the torch module, the targets' source, and what the trace says."""

    @property
    def info(self) -> ModelFacts: ...

    @property
    def provider(self) -> str: ...

    @property
    def precision(self) -> str: ...

    def describe(self) -> str: ...

    def torch_module(self, layers: Sequence[str]) -> VGGFeatures: ...

    def targets(self, spec: ModelSpec, warn: Callable[[str], None] | None = None) -> TargetSource: ...


#: Opens the model a session runs: (settings, the model asked for, a listener for progress notes) -> the model.
#: ``nst_engine.api.model.open_model`` is the one the front doors hand over.
Opener = Callable[[StyleConfig, ModelSpec, Callable[[str], None]], OpenedModel]
