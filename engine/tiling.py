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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError, ResourceError
from nst_engine.layers import Network, conv_indices, deepest, layer_index, layer_names, stride
from nst_engine.losses import StyleStats, _wide, gram_loss, style_stats, wasserstein_loss
from nst_engine.memory import estimate_bytes
from nst_engine.objective import Objective
from nst_engine.resize import resize
from nst_engine.targets import StyleRegion
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


class _Sums:
    """Per (region, layer) sums over the image's positions, and per content layer the squared error."""

    def __init__(self) -> None:
        self.moment: dict[tuple[int, str], torch.Tensor] = {}
        self.first: dict[tuple[int, str], torch.Tensor] = {}
        self.weight: dict[tuple[int, str], torch.Tensor] = {}
        self.content: dict[str, torch.Tensor] = {}

    @staticmethod
    def add(table: dict[Any, torch.Tensor], key: Any, value: torch.Tensor) -> None:
        table[key] = value if key not in table else table[key] + value


class TiledObjective(Objective):
    """An ``Objective`` whose forward and backward run tile by tile (see the module docstring); same terms."""

    def __init__(
        self,
        net: VGGFeatures,
        content: dict[str, torch.Tensor],
        regions: Sequence[StyleRegion],
        config: StyleConfig,
        plan: Plan,
    ) -> None:
        if config.normalize_gradients:
            raise ConfigError("--normalize-gradients needs the whole feature map; it cannot be tiled (use --tile off)")
        super().__init__(net, content, regions, config)
        self.plan = plan
        self._full_masks: dict[tuple[int, str], torch.Tensor] = {}

    # -- shared pieces --------------------------------------------------------------------------------------------

    def _features(self, crop: torch.Tensor) -> Mapping[str, torch.Tensor]:
        if self.channels_last:
            crop = crop.contiguous(memory_format=torch.channels_last)
        with self._autocast(crop):
            return self.forward_net(crop)

    def _full_mask(self, index: int, layer: str, shape: tuple[int, int]) -> torch.Tensor | None:
        mask = self.regions[index].mask
        if mask is None:
            return None
        key = (index, layer)
        if key not in self._full_masks or tuple(self._full_masks[key].shape[-2:]) != shape:
            self._full_masks[key] = resize(mask, *shape, kind="mask")
        return self._full_masks[key]

    def _tile_sums(self, image: torch.Tensor, tile: Tile, features: Mapping[str, torch.Tensor], sums: _Sums) -> None:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        cfg = self.config
        for layer in cfg.content_layers:
            s = stride(layer)
            full = (h // s, w // s)
            f = _wide(_core(features[layer], tile, s, full))
            target = _core_of_full(self.content[layer], tile, s, full).to(f.dtype)
            sums.add(sums.content, layer, (f - target).pow(2).sum())
        for layer in cfg.style_layers:
            s = stride(layer)
            full = (h // s, w // s)
            f = _wide(_core(features[layer], tile, s, full)).reshape(features[layer].shape[1], -1)
            for index in range(len(self.regions)):
                mask = self._full_mask(index, layer, full)
                m = None if mask is None else _core_of_full(mask, tile, s, full).reshape(-1).to(f.dtype)
                weighted = f if m is None else f * m
                key = (index, layer)
                sums.add(sums.moment, key, weighted @ f.T)
                sums.add(sums.first, key, weighted.sum(dim=1))
                sums.add(sums.weight, key, f.new_tensor(float(f.shape[1])) if m is None else m.sum())

    def _terms(
        self, sums: _Sums, shape: tuple[int, int], stats_of: Callable[[tuple[int, str]], StyleStats]
    ) -> list[torch.Tensor]:
        """Content terms, then style terms, in ``names()``'s order, from the global sums."""
        cfg = self.config
        h, w = shape
        out = []
        for layer in cfg.content_layers:
            s = stride(layer)
            count = self.content[layer].shape[1] * (h // s) * (w // s)
            error = sums.content[layer]
            value = 0.5 * error if cfg.normalization == "gatys" else error / count
            out.append(self.content_factor * value)
        for layer in cfg.style_layers:
            total: torch.Tensor | float = 0.0
            for index, region in enumerate(self.regions):
                stats = stats_of((index, layer))
                if cfg.style_loss == "wasserstein":
                    total = total + wasserstein_loss(stats, region.target[layer], self.cov_sqrt[index][layer])
                else:
                    total = total + gram_loss(stats, region.target[layer], cfg.normalization)
            assert isinstance(total, torch.Tensor)
            out.append(self.style_factor * self.layer_weights[layer] * total)
        return out

    def names(self) -> list[str]:
        cfg = self.config
        return [f"content.{layer}" for layer in cfg.content_layers] + [f"style.{layer}" for layer in cfg.style_layers]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        values = _TiledTerms.apply(image, self)
        assert isinstance(values, torch.Tensor)
        names = self.names()
        terms = {name: values[i] for i, name in enumerate(names)}
        ncontent = len(self.config.content_layers)
        terms.update(content=values[:ncontent].sum(), style=values[ncontent:].sum())
        return self._pixel_terms(image, terms)


class _TiledTerms(torch.autograd.Function):
    """Loss terms of a tiled objective as one vector; backward re-runs each tile with gradients (pass 2)."""

    @staticmethod
    def forward(ctx: Any, image: torch.Tensor, objective: TiledObjective) -> torch.Tensor:
        sums = _Sums()
        with torch.no_grad():
            for tile in objective.plan.tiles:
                crop = image[..., tile.cy0 : tile.cy1, tile.cx0 : tile.cx1]
                objective._tile_sums(image, tile, objective._features(crop), sums)
        shape = (int(image.shape[-2]), int(image.shape[-1]))

        def stats_of(key: tuple[int, str]) -> StyleStats:
            return StyleStats(sums.moment[key] / sums.weight[key], sums.first[key] / sums.weight[key])

        with torch.no_grad():
            values = torch.stack(objective._terms(sums, shape, stats_of)).float()
        ctx.objective, ctx.sums = objective, sums
        ctx.save_for_backward(image)
        return values

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor) -> tuple[torch.Tensor, None]:
        (image,) = ctx.saved_tensors
        objective: TiledObjective = ctx.objective
        sums: _Sums = ctx.sums
        shape = (int(image.shape[-2]), int(image.shape[-1]))
        # dL/d(global statistics): the loss as a function of leaf copies of them.
        moments = {k: (v / sums.weight[k]).detach().requires_grad_(True) for k, v in sums.moment.items()}
        firsts = {k: (v / sums.weight[k]).detach().requires_grad_(True) for k, v in sums.first.items()}
        errors = {k: v.detach().requires_grad_(True) for k, v in sums.content.items()}
        leaf = _Sums()
        leaf.content = errors
        with torch.enable_grad():
            values = torch.stack(objective._terms(leaf, shape, lambda k: StyleStats(moments[k], firsts[k])))
            wrt = [*moments.values(), *firsts.values(), *errors.values()]
            grads = torch.autograd.grad((values * grad_values.to(values.dtype)).sum(), wrt, allow_unused=True)
        keys = [("m", k) for k in moments] + [("f", k) for k in firsts] + [("c", k) for k in errors]
        dstat: dict[tuple[str, Any], torch.Tensor] = {
            key: (g if g is not None else torch.zeros_like(t)) for key, g, t in zip(keys, grads, wrt, strict=True)
        }
        grad_image = torch.zeros_like(image)
        for tile in objective.plan.tiles:
            crop = image[..., tile.cy0 : tile.cy1, tile.cx0 : tile.cx1].detach().requires_grad_(True)
            with torch.enable_grad():
                part = _Sums()
                objective._tile_sums(image, tile, objective._features(crop), part)
                surrogate = crop.new_zeros((), dtype=torch.float32)
                for k, v in part.moment.items():
                    surrogate = surrogate + (dstat[("m", k)] * v).sum() / sums.weight[k]
                for k, v in part.first.items():
                    surrogate = surrogate + (dstat[("f", k)] * v).sum() / sums.weight[k]
                for layer, v in part.content.items():
                    surrogate = surrogate + dstat[("c", layer)] * v
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
        """Second moment and mean at ``layers``, summed tile by tile over the cores (float64 sums)."""
        if self._whole(image):
            features = self.encoder(image)
            return {layer: style_stats(features[layer]) for layer in layers}
        h, w = int(image.shape[-2]), int(image.shape[-1])
        moment: dict[str, torch.Tensor] = {}
        first: dict[str, torch.Tensor] = {}
        count: dict[str, int] = {}
        for tile in tile_grid(h, w, self.tile, self.halo, self.step):
            features = self.encoder(image[..., tile.cy0 : tile.cy1, tile.cx0 : tile.cx1])
            for layer in layers:
                s = stride(layer)
                core = _wide(_core(features[layer], tile, s, (h // s, w // s))).reshape(features[layer].shape[1], -1)
                core = core.double()
                _Sums.add(moment, layer, core @ core.T)
                _Sums.add(first, layer, core.sum(dim=1))
                count[layer] = count.get(layer, 0) + int(core.shape[1])
        return {
            layer: StyleStats((moment[layer] / count[layer]).float(), (first[layer] / count[layer]).float())
            for layer in layers
        }
