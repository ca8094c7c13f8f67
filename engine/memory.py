"""How much memory a run will need, checked before it starts, so a run that cannot fit fails at once.

The estimate counts what scales with the image: every layer output up to the deepest layer (kept by autograd
for the backward pass), the gradient buffers of the backward pass, and the L-BFGS history; plus a fixed
base for the libraries and the network. The per-pixel constants were measured (bench/reports: peak RSS on CPU).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import ResourceError
from nst_engine.layers import LAYER_INDEX, LAYER_NAMES, deepest, stride
from nst_engine.optim.registry import entry
from nst_engine.resize import fit_long_side
from nst_engine.vgg import CONV_SHAPES

#: Libraries, the network's weights and ONNX Runtime's session, before any image. Measured on CPU: a CLI run at
#: 256x192 peaked at 797 MiB RSS, about 630 MiB of it not proportional to the image.
BASE_BYTES = {"cpu": 700 * 2**20, "cuda": 400 * 2**20}
#: Bytes kept per activation float, relative to one copy. Measured on CPU (bench/reports/cpu-2core): peak RSS grew
#: 3.4 KB per pixel from 256 to 512 px, about 1.1 copies of the 610 floats per pixel up to relu5_1 plus the L-BFGS
#: history; 1.25 leaves a margin. Unmeasured on CUDA, where the caching allocator may hold more.
ACTIVATION_COPIES = 1.25
#: The same for one tile's crop of a tiled step: the two passes, the tile's slices of each style layer and the
#: allocator's pools for the crops' several shapes. Measured on CPU (bench/reports/cpu-2core-tiling-series):
#: a 1056 px crop (896 px tiles, 80 px halo) held 2.08 copies at 2048 px and 2.12 at 4096 px, a 976x768 crop 1.36
#: at 1024 px; 2.25 covers the worst with a margin (and overstates small tiled sizes, which is the safe side).
TILED_ACTIVATION_COPIES = 2.25


def activation_floats_per_pixel(config: StyleConfig) -> float:
    """Floats stored per input pixel by the forward pass up to the deepest layer."""
    last = LAYER_INDEX[deepest(config.layers)]
    channels, area, total = 3, 1.0, 0.0
    for index in range(last + 1):
        name = LAYER_NAMES[index]
        if name.startswith("conv"):
            channels = CONV_SHAPES[index][1]
        elif name.startswith("pool"):
            area /= 4
        total += channels * area
    return total


def estimate_bytes(
    height: int,
    width: int,
    config: StyleConfig,
    device: str,
    crop: tuple[int, int] | None = None,
    history: int | None = None,
) -> int:
    """Peak bytes of a run at (height, width) on ``device`` ("cpu" or "cuda").

    Tiled (``crop``: the largest tile with its halo), the activations are one crop's, and what stays image-sized
    is the image, its gradient, the optimiser's state (``history`` pairs for L-BFGS) and the content targets."""
    pixels = height * width
    element = 2 if config.precision in ("bf16", "fp16") else 4
    active = pixels if crop is None else crop[0] * crop[1]
    copies = ACTIVATION_COPIES if crop is None else TILED_ACTIVATION_COPIES
    activations = activation_floats_per_pixel(config) * active * element * copies
    pairs = config.lbfgs_history if history is None else history
    image_state = 3 * pixels * 4 * entry(config.optimizer).image_buffers(pairs)
    targets = 0.0 if crop is None else content_floats_per_pixel(config) * pixels * 4 * 2  # targets and their stitching
    return int(
        BASE_BYTES.get(device, BASE_BYTES["cpu"]) + activations + image_state + targets + sliced_bytes(pixels, config)
    )


def sliced_bytes(pixels: int, config: StyleConfig) -> int:
    """What the sliced Wasserstein loss holds whole, tiled or not: every style layer's projections on
    ``sw_projections`` directions (float32), their gradient, and a copy while a tiled step joins them (its sort is
    global). 0 for the other losses, whose statistics are C x C."""
    if config.style_loss != "sliced":
        return 0
    positions = sum(pixels / stride(layer) ** 2 for layer in config.style_layers)
    return int(positions * config.sw_projections * 4 * 3)


def content_floats_per_pixel(config: StyleConfig) -> float:
    """Floats per input pixel of the content targets (kept whole while tiling)."""
    total = 0.0
    for layer in config.content_layers:
        channels = CONV_SHAPES[max(i for i in CONV_SHAPES if i <= LAYER_INDEX[layer])][1]
        total += channels / stride(layer) ** 2
    return total


def available_bytes(device: torch.device) -> int:
    """Free memory now: the GPU's free memory, or MemAvailable on Linux (else a large number: cannot tell)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def largest_fitting_size(height: int, width: int, config: StyleConfig, device: str, budget: int) -> int:
    """The largest --size (long side) whose estimate fits in ``budget`` bytes, for this aspect ratio."""
    lo, hi = 0, max(height, width)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        h, w = fit_long_side(height, width, mid)
        if estimate_bytes(h, w, config, device) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


def check_fits(height: int, width: int, config: StyleConfig, device: torch.device, headroom: float = 0.9) -> int:
    """Raise ResourceError naming the largest size that fits if (height, width) would not; return the estimate."""
    need = estimate_bytes(height, width, config, device.type)
    have = available_bytes(device)
    budget = int(have * headroom)
    if need > budget:
        fits = largest_fitting_size(height, width, config, device.type, budget)
        hint = f"the largest size that fits is --size {fits}" if fits >= 16 else "no size fits; free some memory"
        raise ResourceError(
            f"a {width}x{height} run on {device.type} needs about {_gib(need)} but {_gib(have)} is free; {hint} "
            f"(or use --scales to reach the size from a smaller start, or --precision bf16 on CUDA)"
        )
    return need


#: ONNX Runtime's arena over what the style pass holds (outputs kept, one convolution's input and output).
INFERENCE_OVERHEAD = 1.5


def inference_bytes(height: int, width: int, config: StyleConfig) -> int:
    """Peak bytes of one forward pass without gradients at (height, width), as the style targets are computed:
    every requested layer's output is held to the end, plus the largest convolution's input and output."""
    held = sum(CONV_SHAPES[_conv_of(layer)][1] / stride(layer) ** 2 for layer in config.layers)
    transient = 0.0
    for index, (c_in, c_out) in CONV_SHAPES.items():
        if index <= LAYER_INDEX[deepest(config.layers)]:
            transient = max(transient, (c_in + c_out) / stride(LAYER_NAMES[index]) ** 2)
    floats = (held + transient + 3 * 2) * height * width  # the image and its normalised copy
    return int(BASE_BYTES["cpu"] + floats * 4 * INFERENCE_OVERHEAD)


def _conv_of(layer: str) -> int:
    return max(i for i in CONV_SHAPES if i <= LAYER_INDEX[layer])


def check_style_fits(height: int, width: int, config: StyleConfig, headroom: float = 0.9) -> None:
    """Raise ResourceError before the style pass if a style image of (height, width) would not fit in memory
    (a large --style-scale), naming the largest --style-scale that does. At --style-scale 1 or less the run's
    own check (``check_fits``) is the stricter one, and its advice (--size) the one to give."""
    if config.style_scale <= 1:
        return
    need = inference_bytes(height, width, config)
    have = available_bytes(torch.device("cpu"))
    if need <= have * headroom:
        return
    fits = config.style_scale * math.sqrt(have * headroom / need)
    raise ResourceError(
        f"the style image at --style-scale {config.style_scale:g} is {width}x{height} px and its targets need about "
        f"{_gib(need)}, but {_gib(have)} is free; use --style-scale {math.floor(fits * 100) / 100:g} or less"
    )


def out_of_memory_error(height: int, width: int, config: StyleConfig, device: torch.device) -> ResourceError:
    """The ResourceError for an out-of-memory failure in mid-run, with the same advice as check_fits."""
    budget = int(available_bytes(device) * 0.9)
    fits = largest_fitting_size(height, width, config, device.type, budget)
    fits = min(fits, max(16, int(max(height, width) * math.sqrt(0.5))))  # it did not fit: suggest smaller
    return ResourceError(f"ran out of {device.type} memory at {width}x{height}; try --size {fits} or less, or --scales")
