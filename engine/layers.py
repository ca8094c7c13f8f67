"""Canonical VGG16 / VGG19 layer names and their indices in torchvision's ``features`` sequence.

torchvision numbers the feature modules of VGG19 0..36 and of VGG16 0..30: convolutions, ReLUs and max pools.
The engine names them as Gatys et al. do (``conv1_1``, ``relu1_1``, ``pool1``, ...), and keeps torchvision's
indices so that weight files in torchvision format (``features.N.weight``) load as they are. VGG16 has three
convolutions in blocks 3 to 5 where VGG19 has four, so VGG19's names are a superset of VGG16's; depth order,
strides and minimum sizes follow from a name alone and are the same in both networks.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Sequence
from typing import Literal

from nst_engine.errors import LayerError

Network = Literal["vgg16", "vgg19"]
#: How the style layers' second moments are scaled (engine.losses), the style loss, and the pooling: names only,
#: here, so that the settings (and the command line's start-up) need no torch.
Normalization = Literal["mean", "gatys"]
StyleLossKind = str  # a name in engine.losses.registry.STYLE_LOSSES
Pooling = Literal["max", "avg"]
NETWORKS: tuple[Network, ...] = ("vgg16", "vgg19")
#: Convolutions per block (VGG16: configuration "D", VGG19: "E").
BLOCKS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
#: Output channels per block.
BLOCK_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)


@functools.cache
def layer_names(network: str = "vgg19") -> tuple[str, ...]:
    """Every named layer of ``network``, in order; ``layer_names(n)[i]`` is torchvision's ``features[i]``."""
    if network not in BLOCKS:
        raise LayerError(f"unknown network '{network}'; choose vgg16 or vgg19")
    names: list[str] = []
    for block, convs in enumerate(BLOCKS[network], start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return tuple(names)


@functools.cache
def layer_index(network: str = "vgg19") -> dict[str, int]:
    return {name: i for i, name in enumerate(layer_names(network))}


@functools.cache
def conv_indices(network: str = "vgg19") -> tuple[int, ...]:
    """torchvision indices of the convolutions, the only modules with weights."""
    return tuple(i for i, n in enumerate(layer_names(network)) if n.startswith("conv"))


@functools.cache
def conv_shapes(network: str = "vgg19") -> dict[int, tuple[int, int]]:
    """(in_channels, out_channels) of each convolution, keyed by torchvision index."""
    shapes: dict[int, tuple[int, int]] = {}
    channels = 3
    names = layer_names(network)
    for index in conv_indices(network):
        out = BLOCK_CHANNELS[int(names[index][4]) - 1]
        shapes[index] = (channels, out)
        channels = out
    return shapes


def network_with_convs(count: int) -> Network | None:
    """The network that has ``count`` convolutions (13: VGG16, 16: VGG19), else None."""
    for network in NETWORKS:
        if len(conv_indices(network)) == count:
            return network
    return None


#: VGG19's tables, the default network's (kept as names for the code that only ever meant VGG19).
LAYER_NAMES: tuple[str, ...] = layer_names("vgg19")
LAYER_INDEX: dict[str, int] = layer_index("vgg19")
CONV_INDICES: tuple[int, ...] = conv_indices("vgg19")

#: Defaults and presets name only layers that both networks have.
DEFAULT_CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def check_layer(name: str, network: str | None = "vgg19") -> str:
    """Return ``name`` if it is a layer of ``network``, else raise LayerError suggesting the nearest one. With no
    network (settings are read before the model is known), any VGG layer passes: VGG19's names hold VGG16's."""
    names = layer_names(network or "vgg19")
    if name in names:
        return name
    label = network.upper() if network else "VGG"
    if network == "vgg16" and name in LAYER_INDEX:
        block = name[-3] if name.startswith(("conv", "relu")) else ""
        raise LayerError(
            f"layer '{name}' is in VGG19 but not in VGG16 (VGG16's block {block} ends at conv{block}_3); "
            f"use a layer of VGG16 or weights of VGG19"
        )
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "; names look like 'relu4_2' or 'conv1_1'"
    raise LayerError(f"unknown {label} layer '{name}'{hint}")


def check_layers(names: Iterable[str], network: str) -> tuple[str, ...]:
    """``names`` checked against ``network`` (a config's layers are checked against VGG19, the superset)."""
    return tuple(check_layer(n, network) for n in names)


def parse_layers(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Parse ``"relu1_1,relu2_1"`` (or a sequence of names) into checked, de-duplicated names in order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [check_layer(s.strip(), None) for s in items if s.strip()]
    if not names:
        raise LayerError("no layers given; pass names such as 'relu1_1,relu2_1'")
    return tuple(dict.fromkeys(names))


def depth(name: str) -> tuple[int, int, int]:
    """A sort key by position in either network: (block, convolution, 0 conv / 1 relu); pools end their block."""
    block = int(name[4])
    if name.startswith("pool"):
        return (block, 99, 0)
    return (block, int(name[6:]), 0 if name.startswith("conv") else 1)


def ordered(names: Iterable[str]) -> tuple[str, ...]:
    """The distinct names sorted by depth in the network."""
    return tuple(sorted(set(names), key=depth))


def deepest(names: Sequence[str]) -> str:
    """The deepest layer among ``names``: where the network can be cut."""
    return max(names, key=depth)


def stride(name: str) -> int:
    """How much smaller than the input layer ``name``'s output is on each side (a power of two)."""
    block = int(name[4])
    return 2**block if name.startswith("pool") else 2 ** (block - 1)


def min_input_size(names: Sequence[str]) -> int:
    """The smallest input side in pixels for which every layer in ``names`` is at least 1x1."""
    return stride(deepest(names))
