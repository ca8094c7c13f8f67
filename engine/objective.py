"""The loss the optimiser minimises: an image through a torch VGG, then the terms of ``engine.losses.terms``.

Terms are returned by name: ``content.relu4_2``, ``style.relu1_1``, ``tv`` (and ``temporal`` for a video frame),
plus the sums ``content``, ``style`` and ``total``. ``engine.tiling.TiledObjective`` computes the same terms tile by
tile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Self

import torch
from torch import nn

from nst_engine.config import StyleConfig
from nst_engine.losses.terms import ContentTerm, Terms, Window, build_terms
from nst_engine.targets import StyleRegion
from nst_engine.vgg import VGGFeatures


class _NormalizeGrad(torch.autograd.Function):
    """Identity forward; backward divides the gradient by its L1 norm (jcjohnson's -normalize_gradients)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad / (grad.abs().sum() + 1e-8)


def normalize_grad(x: torch.Tensor) -> torch.Tensor:
    out = _NormalizeGrad.apply(x)
    assert isinstance(out, torch.Tensor)
    return out


def compiled(net: VGGFeatures) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """torch.compile of the network, made once per module and kept on it (recompiling per scale would waste
    minutes). Dynamic shapes: one compilation serves every scale of a multi-scale run."""
    if net.compiled_forward is None:
        # object.__setattr__: a compiled wrapper is itself a Module; registering it would make a cycle.
        object.__setattr__(net, "compiled_forward", torch.compile(net, dynamic=True))
    assert net.compiled_forward is not None
    return net.compiled_forward


class Objective(nn.Module):
    """Maps an image (1, 3, H, W) in [0, 1] to named, weighted loss terms (float32 scalars)."""

    def __init__(self, net: VGGFeatures, terms: Terms, config: StyleConfig) -> None:
        super().__init__()
        self.net, self.terms, self.config = net, terms, config
        self.channels_last = False
        self.forward_net: Callable[[torch.Tensor], dict[str, torch.Tensor]] = net

    @classmethod
    def of(
        cls,
        net: VGGFeatures,
        content: Mapping[str, torch.Tensor],
        regions: Sequence[StyleRegion],
        config: StyleConfig,
        *,
        temporal: tuple[Sequence[tuple[torch.Tensor, torch.Tensor]], float] | None = None,
        **extra: Any,
    ) -> Self:
        """An objective with the terms of ``config`` (``build_terms``) for these targets."""
        return cls(net, build_terms(config, content, regions, net.feature_scale, temporal), config, **extra)

    def accelerate(self, device: torch.device) -> Objective:
        """Memory format and compilation for speed; the numbers stay those of the fp32 network within tolerance."""
        cfg = self.config
        self.channels_last = cfg.channels_last
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stub lacks it
            # Content targets in the features' layout, or the content gradient reaches the network as NCHW.
            for term in self.terms.features:
                if isinstance(term, ContentTerm):
                    term.target = term.target.contiguous(memory_format=torch.channels_last)
        if cfg.compile:
            self.forward_net = compiled(self.net)
        return self

    def _autocast(self, image: torch.Tensor) -> Any:
        precision = self.config.precision
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            return torch.autocast(device_type=image.device.type, dtype=dtype)
        return nullcontext()

    def features(self, image: torch.Tensor) -> Mapping[str, torch.Tensor]:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with self._autocast(image):
            return self.forward_net(image)

    def feature_values(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Every feature term's weighted value, in ``terms.features``' order."""
        features = self.features(image)
        values = []
        for term in self.terms.features:
            f = features[term.layer]
            if self.config.normalize_gradients:
                f = normalize_grad(f)
            values.append(term.weight * term.value(term.local(f, Window.whole(f))))
        return values

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.terms.draw()
        return self.named(image, self.feature_values(image))

    def named(self, image: torch.Tensor, values: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The terms by name, the feature terms' ``values`` and the pixel terms, with the sums."""
        terms: dict[str, torch.Tensor] = {}
        sums = {"content": image.new_zeros((), dtype=torch.float32), "style": image.new_zeros((), dtype=torch.float32)}
        for term, value in zip(self.terms.features, values, strict=True):
            terms[term.name] = value
            kind = term.name.partition(".")[0]
            sums[kind] = sums[kind] + value
        terms.update(sums)
        total = sums["content"] + sums["style"]
        for pixel in self.terms.pixels:
            terms[pixel.name] = pixel.weight * pixel(image)
            total = total + terms[pixel.name]
        terms["total"] = total
        return terms
