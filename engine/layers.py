"""Canonical VGG19 layer names and their indices in torchvision's ``features`` sequence.

torchvision numbers VGG19's feature modules 0..36: convolutions, in-place ReLUs and max pools.
The engine names them as Gatys et al. do (``conv1_1``, ``relu1_1``, ``pool1``, ...), and keeps
torchvision's indices so that weight files in torchvision format (``features.N.weight``) load as they are.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from engine.errors import LayerError

# Convolutions per block in VGG19 ("E" configuration).
_BLOCKS: tuple[int, ...] = (2, 2, 4, 4, 4)
# Output channels per block.
BLOCK_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)


def _build_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, convs in enumerate(_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return tuple(names)


#: Every named layer, in order; ``LAYER_NAMES[i]`` is torchvision's ``features[i]``.
LAYER_NAMES: tuple[str, ...] = _build_names()
LAYER_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}
#: torchvision indices of the convolutions, the only modules with weights.
CONV_INDICES: tuple[int, ...] = tuple(i for i, n in enumerate(LAYER_NAMES) if n.startswith("conv"))

DEFAULT_CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def check_layer(name: str) -> str:
    """Return ``name`` if it is a VGG19 layer, else raise LayerError suggesting the nearest one."""
    if name in LAYER_INDEX:
        return name
    close = difflib.get_close_matches(name, LAYER_NAMES, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "; names look like 'relu4_2' or 'conv1_1'"
    raise LayerError(f"unknown VGG19 layer '{name}'{hint}")


def parse_layers(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Parse ``"relu1_1,relu2_1"`` (or a sequence of names) into checked, de-duplicated names in order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [check_layer(s.strip()) for s in items if s.strip()]
    if not names:
        raise LayerError("no layers given; pass names such as 'relu1_1,relu2_1'")
    return tuple(dict.fromkeys(names))


def ordered(names: Iterable[str]) -> tuple[str, ...]:
    """The distinct names sorted by depth in the network."""
    return tuple(sorted(set(names), key=LAYER_INDEX.__getitem__))


def deepest(names: Sequence[str]) -> str:
    """The deepest layer among ``names``: where the network can be cut."""
    return max(names, key=LAYER_INDEX.__getitem__)


def stride(name: str) -> int:
    """How much smaller than the input layer ``name``'s output is on each side (a power of two)."""
    return 2 ** sum(1 for n in LAYER_NAMES[: LAYER_INDEX[name] + 1] if n.startswith("pool"))


def min_input_size(names: Sequence[str]) -> int:
    """The smallest input side in pixels for which every layer in ``names`` is at least 1x1."""
    return stride(deepest(names))
