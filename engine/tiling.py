"""Tiled optimisation with exact global style statistics: any output size in memory bounded by the tile.

A style loss compares statistics of a whole feature map (Gram matrices, means), so it cannot be cut into
independent tiles the way the content and TV terms can. It is computed in two passes per step:

1. every tile is run forward without gradients and its core region's sums (sum m f f^T, sum m f, sum m) are
   added up, which gives the global statistics and so the exact loss;
2. the loss's gradient with respect to those statistics is taken, and then each tile is run forward again with
   gradients and the surrogate <dL/dS, S_tile> (linear in the tile's sums, so its gradient is the tile's share
   of the exact gradient) is back-propagated into that tile's pixels. The content term, a sum over positions,
   is tiled directly; TV is computed on the whole image, which costs no more memory than the image.

Tiles overlap by a halo, and every tile's corner lies on the deepest layer's stride, so that a tile's features
sit on the same grid as the whole image's. Each core feature depends only on pixels within the receptive-field
radius, so with a halo at least that radius (``exact_halo``) the tiled loss and gradient equal the untiled ones
to float error; a smaller halo trades exactness near tile borders for speed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError, ResourceError
from nst_engine.layers import Network, conv_indices, deepest, layer_index, layer_names, stride
from nst_engine.losses.functional import StyleStats, as_fp32, sample_positions, style_stats
from nst_engine.losses.terms import Stats, Terms, Window
from nst_engine.memory import estimate_bytes
from nst_engine.objective import Objective
from nst_engine.targets import TargetSource
from nst_engine.vgg import VGGFeatures


def receptive_radius(layers: Sequence[str], network: Network = "vgg19") -> int:
    """Pixels on each side of a position that the deepest of ``layers`` can see (3x3 convolutions, 2x2 pools)."""
    last = layer_index(network)[deepest(layers)]
    convs = set(conv_indices(network))
    radius, jump = 0, 1
    for index, name in enumerate(layer_names(network)[: last + 1]):
        if index in convs:
            radius += jump
        elif name.startswith("pool"):
            radius += jump
            jump *= 2
    return radius


def exact_halo(layers: Sequence[str], network: Network = "vgg19") -> int:
    """The smallest halo, a multiple of the deepest layer's stride, at which tiling is exact."""
    step = stride(deepest(layers))
    return math.ceil(receptive_radius(layers, network) / step) * step


@dataclass(frozen=True)
class Tile:
    """A core region (y0:y1, x0:x1) of the image, and the crop (cy0:cy1, cx0:cx1) run through the network."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int
    bottom: bool = False  # the core reaches the image's last row (its feature rows run to the map's end)
    right: bool = False

    def rows(self, scale: int, full: tuple[int, int]) -> tuple[int, int]:
        """The core's rows in a whole-image feature map at ``scale`` (the layer's stride)."""
        return self.y0 // scale, full[0] if self.bottom else self.y1 // scale

    def cols(self, scale: int, full: tuple[int, int]) -> tuple[int, int]:
        return self.x0 // scale, full[1] if self.right else self.x1 // scale


def tile_grid(height: int, width: int, tile: int, halo: int, step: int) -> list[Tile]:
    """Cores of ``tile`` px (the last of each row and column smaller) with a ``halo`` around each, all corners on
    multiples of ``step``."""
    if tile % step or halo % step:
        raise ConfigError(f"--tile and --tile-halo must be multiples of {step} px (the deepest layer's stride)")
    tiles = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            crop = (max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo))
            tiles.append(Tile(y0, y1, x0, x1, *crop, bottom=y1 == height, right=x1 == width))
    return tiles


def _core(feature: torch.Tensor, tile: Tile, scale: int, full: tuple[int, int]) -> torch.Tensor:
    """The part of a crop's feature map (at ``scale``, the layer's stride) that is the tile's core."""
    (r0, r1), (c0, c1) = tile.rows(scale, full), tile.cols(scale, full)
    top, left = tile.cy0 // scale, tile.cx0 // scale
    return feature[..., r0 - top : r1 - top, c0 - left : c1 - left]


def _core_of_full(full_map: torch.Tensor, tile: Tile, scale: int, full: tuple[int, int]) -> torch.Tensor:
    """The tile's core region of a whole-image map at ``scale`` (a content target, a resized mask)."""
    (r0, r1), (c0, c1) = tile.rows(scale, full), tile.cols(scale, full)
    return full_map[..., r0:r1, c0:c1]


@dataclass(frozen=True)
class Plan:
    """How one scale is tiled: the grid, the tile and halo sizes, and the estimated peak memory."""

    tiles: list[Tile]
    tile: int
    halo: int
    peak_bytes: int
    history: int = 0  # L-BFGS pairs kept (shortened from the setting when the full history would not fit)


#: Auto-tiling tries tiles no smaller than this (a smaller tile spends most of its time on its halo).
MIN_AUTO_TILE = 256


def plan_tiles(
    height: int, width: int, config: StyleConfig, device: torch.device, budget: int, network: Network = "vgg19"
) -> Plan | None:
    """How to tile a (height, width) scale: None when it is run whole (it fits, or tiling is off), else the
    largest tile (and the longest L-BFGS history) whose estimate fits ``budget`` bytes; ResourceError if none."""
    if config.tile == "off":
        return None
    step = stride(deepest(config.layers))
    halo = config.tile_halo if config.tile_halo is not None else exact_halo(config.layers, network)
    histories = [config.lbfgs_history] + [h for h in (10, 5) if h < config.lbfgs_history]
    if config.optimizer != "lbfgs":
        histories = [config.lbfgs_history]

    def need(tile: int, history: int) -> int:
        crop = (min(height, tile + 2 * halo), min(width, tile + 2 * halo))
        return estimate_bytes(height, width, config, device.type, crop=crop, history=history)

    forced = config.tile_size
    if forced is not None:
        tiles = tile_grid(height, width, forced, halo, step)
        if len(tiles) == 1:
            return None
        return Plan(tiles, forced, halo, need(forced, config.lbfgs_history), config.lbfgs_history)
    if estimate_bytes(height, width, config, device.type) <= budget:
        return None
    largest = max(height, width) // step * step
    for history in histories:
        for tile in range(largest, max(MIN_AUTO_TILE, 2 * halo, step) - 1, -4 * step):
            if need(tile, history) <= budget:
                return Plan(tile_grid(height, width, tile, halo, step), tile, halo, need(tile, history), history)
    raise ResourceError(
        f"a {width}x{height} run does not fit in {budget / 2**30:.1f} GiB even tiled ({MIN_AUTO_TILE} px tiles, "
        f"{histories[-1]} L-BFGS pairs); use a smaller --size, or --optimizer adam"
    )


class _Joined:
    """Every feature term's statistics joined over the tiles, and where each tile's part of a "cat" statistic
    lies in the joined one (its first position and length)."""

    def __init__(self, terms: Terms) -> None:
        self.terms = terms
        self.parts: list[list[Stats]] = [[] for _ in terms.features]  # per term, per tile

    def add(self, index: int, stats: Stats) -> None:
        self.parts[index].append(stats)

    def joined(self, index: int) -> Stats:
        term, parts = self.terms.features[index], self.parts[index]
        out: Stats = {}
        for key in parts[0]:
            values = [p[key] for p in parts]
            if term.combine[key] == "cat":
                out[key] = torch.cat(values, dim=-1)
            else:
                total = values[0]
                for v in values[1:]:
                    total = total + v
                out[key] = total
        return out

    def share(self, index: int, tile: int, key: str, grad: torch.Tensor) -> torch.Tensor:
        """The part of the joined statistic's gradient that belongs to one tile's statistic."""
        if self.terms.features[index].combine[key] != "cat":
            return grad
        start = sum(int(p[key].shape[-1]) for p in self.parts[index][:tile])
        return grad.narrow(-1, start, int(self.parts[index][tile][key].shape[-1]))


class TiledObjective(Objective):
    """An ``Objective`` whose forward and backward run tile by tile (see the module docstring); same terms."""

    def __init__(self, net: VGGFeatures, terms: Terms, config: StyleConfig, plan: Plan) -> None:
        if config.normalize_gradients:
            raise ConfigError("--normalize-gradients needs the whole feature map; it cannot be tiled (use --tile off)")
        super().__init__(net, terms, config)
        self.plan = plan

    def tile_stats(self, image: torch.Tensor, tile: Tile, crop: torch.Tensor) -> list[Stats]:
        """Every feature term's statistics of one tile's core."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        features = self.features(crop)
        out = []
        for term in self.terms.features:
            s = stride(term.layer)
            full = (h // s, w // s)
            window = Window(full, tile.rows(s, full), tile.cols(s, full))
            out.append(term.local(_core(features[term.layer], tile, s, full), window))
        return out

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.terms.draw()
        values = _TiledTerms.apply(image, self)
        assert isinstance(values, torch.Tensor)
        return self.named(image, list(values.unbind()))


class _TiledTerms(torch.autograd.Function):
    """The feature terms of a tiled objective as one vector; backward re-runs each tile with gradients (pass 2)."""

    @staticmethod
    def forward(ctx: Any, image: torch.Tensor, objective: TiledObjective) -> torch.Tensor:
        joined = _Joined(objective.terms)
        with torch.no_grad():
            for tile in objective.plan.tiles:
                crop = image[..., tile.cy0 : tile.cy1, tile.cx0 : tile.cx1]
                for index, stats in enumerate(objective.tile_stats(image, tile, crop)):
                    joined.add(index, stats)
            totals = [joined.joined(i) for i in range(len(objective.terms.features))]
            values = torch.stack(
                [t.weight * t.value(s) for t, s in zip(objective.terms.features, totals, strict=True)]
            ).float()
        ctx.objective, ctx.joined, ctx.totals = objective, joined, totals
        ctx.save_for_backward(image)
        return values

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor) -> tuple[torch.Tensor, None]:
        (image,) = ctx.saved_tensors
        objective: TiledObjective = ctx.objective
        joined: _Joined = ctx.joined
        terms = objective.terms.features
        # dL/d(joined statistics): each term's value as a function of leaf copies of them.
        leaves = [{k: v.detach().requires_grad_(True) for k, v in stats.items()} for stats in ctx.totals]
        with torch.enable_grad():
            values = torch.stack([t.weight * t.value(s) for t, s in zip(terms, leaves, strict=True)])
            flat = [(i, k, v) for i, stats in enumerate(leaves) for k, v in stats.items()]
            grads = torch.autograd.grad(
                (values * grad_values.to(values.dtype)).sum(), [v for _, _, v in flat], allow_unused=True
            )
        dstat = {(i, k): g for (i, k, _), g in zip(flat, grads, strict=True) if g is not None}
        grad_image = torch.zeros_like(image)
        for t, tile in enumerate(objective.plan.tiles):
            crop = image[..., tile.cy0 : tile.cy1, tile.cx0 : tile.cx1].detach().requires_grad_(True)
            with torch.enable_grad():
                # <dL/dS, S_tile> is linear in the tile's statistics: its gradient is the tile's share of the exact one.
                surrogate = crop.new_zeros((), dtype=torch.float32)
                for i, stats in enumerate(objective.tile_stats(image, tile, crop)):
                    for key, value in stats.items():
                        if (i, key) in dstat and value.requires_grad:
                            surrogate = surrogate + (joined.share(i, t, key, dstat[(i, key)]) * value).sum()
                if not surrogate.requires_grad:
                    continue
                (grad,) = torch.autograd.grad(surrogate, crop)
            grad_image[..., tile.cy0 : tile.cy1, tile.cx0 : tile.cx1] += grad
        return grad_image, None


class TiledEncoder:
    """A feature encoder (the ONNX Runtime targets) run tile by tile, with the activations of one tile at a time.
    Content features are stitched from each tile's core, only at the layers asked for; style statistics are
    summed over the cores as the tiles go, so no whole-image map of a style layer is ever held (at 4096 px,
    relu1_1 alone would be 3.2 GB). Exact with the exact halo."""

    def __init__(self, encoder: Callable[[torch.Tensor], Mapping[str, torch.Tensor]], tile: int, halo: int, step: int):
        self.encoder, self.tile, self.halo, self.step = encoder, tile, halo, step

    def _whole(self, image: torch.Tensor) -> bool:
        return int(image.shape[-2]) <= self.tile and int(image.shape[-1]) <= self.tile

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.features(image, None)

    def features(self, image: torch.Tensor, layers: Sequence[str] | None) -> dict[str, torch.Tensor]:
        """The whole image's feature maps at ``layers`` (every layer the encoder gives when None)."""
        if self._whole(image):
            features = self.encoder(image)
            return {k: v for k, v in features.items() if layers is None or k in layers}
        h, w = int(image.shape[-2]), int(image.shape[-1])
        out: dict[str, torch.Tensor] = {}
        for tile in tile_grid(h, w, self.tile, self.halo, self.step):
            features = self.encoder(image[..., tile.cy0 : tile.cy1, tile.cx0 : tile.cx1])
            for layer, feature in features.items():
                if layers is not None and layer not in layers:
                    continue
                s = stride(layer)
                full = (h // s, w // s)
                if layer not in out:
                    out[layer] = feature.new_zeros((feature.shape[0], feature.shape[1], *full))
                _core_of_full(out[layer], tile, s, full).copy_(_core(feature, tile, s, full))
        return out

    def style_stats(self, image: torch.Tensor, layers: Sequence[str]) -> dict[str, StyleStats]:
        """Second moment and mean at ``layers``, summed tile by tile over the cores (float64 sums), and the same
        sample of positions as ``style_stats`` keeps of the whole map."""
        if self._whole(image):
            features = self.encoder(image)
            return {layer: style_stats(features[layer]) for layer in layers}
        h, w = int(image.shape[-2]), int(image.shape[-1])
        moment: dict[str, torch.Tensor] = {}
        first: dict[str, torch.Tensor] = {}
        samples: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
        keep = {layer: sample_positions((h // stride(layer)) * (w // stride(layer))) for layer in layers}
        for tile in tile_grid(h, w, self.tile, self.halo, self.step):
            features = self.encoder(image[..., tile.cy0 : tile.cy1, tile.cx0 : tile.cx1])
            for layer in layers:
                s = stride(layer)
                full = (h // s, w // s)
                core = as_fp32(_core(features[layer], tile, s, full)).reshape(features[layer].shape[1], -1)
                (r0, r1), (c0, c1) = tile.rows(s, full), tile.cols(s, full)
                where = (torch.arange(r0, r1)[:, None] * full[1] + torch.arange(c0, c1)[None, :]).flatten()
                chosen = keep[layer]
                samples[layer].append((core if chosen is None else core[:, torch.isin(where, chosen)]).T.float())
                wide = core.double()
                moment[layer] = wide @ wide.T + moment.get(layer, 0.0)
                first[layer] = wide.sum(dim=1) + first.get(layer, 0.0)
        out = {}
        for layer in layers:
            count = (h // stride(layer)) * (w // stride(layer))
            sample = torch.cat(samples[layer]).contiguous()
            out[layer] = StyleStats((moment[layer] / count).float(), (first[layer] / count).float(), sample)
        return out


@contextlib.contextmanager
def tiled_targets(targets: TargetSource, plan: Plan | None, step: int) -> Iterator[None]:
    """While a tiled scale's targets are computed, the encoder runs tile by tile too (same numbers, one tile's
    activations at a time); the cache keys do not change, as the targets do not."""
    if plan is None:
        yield
        return
    encoder = targets.encoder
    targets.encoder = TiledEncoder(encoder, plan.tile, plan.halo, step)
    try:
        yield
    finally:
        targets.encoder = encoder
