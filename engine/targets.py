"""The fixed targets of an optimisation: content features and style statistics, and how they are computed.

They are computed once per image and size by a feature *encoder*: any callable taking a (1, 3, H, W)
float32 image in [0, 1] and returning ``{layer: (1, C, h, w) float32}``. In the CLI that is ONNX Runtime
running the exported graph; in tests it can be the torch module itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from nst_engine.errors import ConfigError
from nst_engine.losses.functional import StyleStats, style_stats

Encoder = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
StyleTarget = dict[str, StyleStats]


@runtime_checkable
class PartialEncoder(Protocol):
    """An encoder that computes only what is asked of it: the features at some layers, or style statistics
    summed as it goes (the tiled encoder, which never holds a whole image's map of a layer it was not asked for)."""

    def __call__(self, image: torch.Tensor) -> Mapping[str, torch.Tensor]: ...

    def features(self, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]: ...

    def style_stats(self, image: torch.Tensor, layers: Sequence[str]) -> StyleTarget: ...


def content_target(encoder: Encoder, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Content features of ``image`` at ``layers``: ``{layer: (1, C, h, w) float32}``."""
    if isinstance(encoder, PartialEncoder):
        return {layer: f.float() for layer, f in encoder.features(image, layers).items()}
    features = encoder(image)
    return {layer: features[layer].float() for layer in layers}


def style_target(encoder: Encoder, image: torch.Tensor, layers: Sequence[str]) -> StyleTarget:
    """Style statistics (second moment and mean) of ``image`` at ``layers``."""
    if isinstance(encoder, PartialEncoder):
        return encoder.style_stats(image, layers)
    features = encoder(image)
    return {layer: style_stats(features[layer]) for layer in layers}


def normalise_blend(weights: Sequence[float] | None, count: int) -> tuple[float, ...]:
    """Blend weights, one per style, scaled to sum to 1; equal when not given."""
    raw = tuple(weights) if weights is not None else tuple(1.0 for _ in range(count))
    if len(raw) != count:
        raise ConfigError(f"--style-blend-weights has {len(raw)} values for {count} styles; give one per style")
    if any(w < 0 for w in raw) or sum(raw) <= 0:
        raise ConfigError("--style-blend-weights must be 0 or more with a positive sum, e.g. 3,7")
    total = sum(raw)
    return tuple(w / total for w in raw)


def blend(targets: Sequence[StyleTarget], weights: Sequence[float]) -> StyleTarget:
    """Weighted mean of style statistics: the statistics of the mixture of the styles' feature distributions."""
    layers = targets[0].keys()
    out: StyleTarget = {}
    for layer in layers:
        moment = sum(w * t[layer].moment for w, t in zip(weights, targets, strict=True))
        mean = sum(w * t[layer].mean for w, t in zip(weights, targets, strict=True))
        assert isinstance(moment, torch.Tensor) and isinstance(mean, torch.Tensor)
        out[layer] = StyleStats(moment, mean, *_pooled_samples([t[layer] for t in targets], weights))
    return out


def _pooled_samples(
    stats: Sequence[StyleStats], weights: Sequence[float]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The union of the styles' feature samples, each weighted so that style i weighs ``weights[i]`` in all."""
    if len(stats) == 1 or any(s.samples is None for s in stats):
        return (stats[0].samples, stats[0].sample_weights) if len(stats) == 1 else (None, None)
    samples, sample_weights = [], []
    for s, w in zip(stats, weights, strict=True):
        assert s.samples is not None
        count = int(s.samples.shape[0])
        own = s.sample_weights if s.sample_weights is not None else s.samples.new_full((count,), 1.0 / count)
        samples.append(s.samples)
        sample_weights.append(own * w)
    return torch.cat(samples), torch.cat(sample_weights)


class TargetSource(Protocol):
    """Where the optimisation gets its fixed targets: computed directly, or through the on-disk cache."""

    records: list[TargetRecord]
    encoder: Encoder  # what computes the features (swapped for a tiled one while a tiled scale's targets are made)

    def content(self, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]: ...

    def style(self, image: torch.Tensor, layers: Sequence[str]) -> StyleTarget: ...

    def styles(self) -> dict[Any, StyleTarget]:
        """The style targets computed so far, by key: to share with another process's source (``preload``)."""
        ...

    def preload(self, styles: Mapping[Any, StyleTarget]) -> None:
        """Take style targets another source computed (same model and images): they are not computed again."""
        ...


@dataclass(frozen=True)
class StyleRegion:
    """A style target applied where ``mask`` (1, 1, H, W) in [0, 1] is set; everywhere when mask is None."""

    target: StyleTarget
    mask: torch.Tensor | None = None


@dataclass
class TargetRecord:
    """How one target was obtained: for the trace and the terminal."""

    kind: str  # "content" or "style"
    size: tuple[int, int]
    seconds: float
    cache: str  # "hit" (disk), "memory" (earlier in this batch), "miss" or "off"
    forward: bool  # whether an encoder forward pass ran


class DirectTargets:
    """Computes targets with the encoder and keeps none on disk; a style is computed once per process."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.records: list[TargetRecord] = []
        self._styles: dict[tuple[bytes, tuple[int, ...], tuple[str, ...]], StyleTarget] = {}

    def content(self, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        out = content_target(self.encoder, image, layers)
        self.records.append(TargetRecord("content", _hw(image), time.perf_counter() - start, "off", True))
        return out

    def style(self, image: torch.Tensor, layers: Sequence[str]) -> StyleTarget:
        start = time.perf_counter()
        key = (image.detach().float().cpu().numpy().tobytes(), tuple(image.shape), tuple(layers))
        if key in self._styles:
            self.records.append(TargetRecord("style", _hw(image), time.perf_counter() - start, "memory", False))
            return self._styles[key]
        out = self._styles[key] = style_target(self.encoder, image, layers)
        self.records.append(TargetRecord("style", _hw(image), time.perf_counter() - start, "off", True))
        return out

    def styles(self) -> dict[Any, StyleTarget]:
        return dict(self._styles)

    def preload(self, styles: Mapping[Any, StyleTarget]) -> None:
        self._styles.update(styles)


def target_summary(records: Sequence[TargetRecord]) -> dict[str, Any]:
    """What a list of records adds up to, as the trace records it."""
    return {
        "records": [
            {"kind": r.kind, "size": list(r.size), "seconds": round(r.seconds, 5), "cache": r.cache}
            | {"forward": r.forward}
            for r in records
        ],
        "seconds": round(sum(r.seconds for r in records), 5),
        "hits": sum(r.cache == "hit" for r in records),
        "memory_hits": sum(r.cache == "memory" for r in records),
        "misses": sum(r.cache == "miss" for r in records),
        "content_forward_passes": sum(r.forward for r in records if r.kind == "content"),
        "style_forward_passes": sum(r.forward for r in records if r.kind == "style"),
    }


def _hw(image: torch.Tensor) -> tuple[int, int]:
    return int(image.shape[-2]), int(image.shape[-1])
