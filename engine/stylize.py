"""Wiring: images and a target source in, a stylized image out. No files, no terminal, no ONNX here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from engine import color
from engine.config import StyleConfig
from engine.device import configure_precision, resolve_device
from engine.errors import ConfigError, ImageError, ProviderError
from engine.layers import min_input_size
from engine.memory import check_fits, out_of_memory_error
from engine.objective import Objective
from engine.optim.loop import Callback, OptimizeResult, Step, optimize
from engine.resize import fit_long_side, resize, resize_long
from engine.targets import StyleRegion, TargetSource, blend, normalise_blend
from engine.vgg import VGGFeatures

#: Steps queued on a GPU between two reads of the losses (progress bars refresh at this rate).
GPU_SYNC_EVERY = 10


@dataclass
class StylizeResult:
    image: torch.Tensor  # (1, 3, H, W) float32 in [0, 1], on the CPU
    steps: list[Step] = field(default_factory=list)
    interrupted: bool = False
    recoveries: int = 0
    #: Where the run stopped: scale index, step, optimiser state and the image being optimised.
    checkpoint: dict[str, Any] = field(default_factory=dict)


def _check_mask(mask: torch.Tensor, content: torch.Tensor, what: str) -> torch.Tensor:
    if mask.ndim != 4 or mask.shape[:2] != (1, 1):
        raise ConfigError(f"{what} must be a (1, 1, H, W) tensor, not {tuple(mask.shape)}")
    ch, cw = content.shape[-2:]
    mh, mw = mask.shape[-2:]
    if abs(mh / mw - ch / cw) > 0.02 * ch / cw:
        raise ConfigError(
            f"{what} is {mw}x{mh} but the content image is {cw}x{ch}: different aspect ratios; "
            "make the mask from the content image"
        )
    if float(mask.max()) <= 0.0:
        raise ConfigError(f"{what} covers no pixel (all black); paint the region white")
    return mask.clamp(0.0, 1.0)


class _Scale:
    """Everything fixed for one scale of a run: sized inputs, targets, objective."""

    def __init__(self, owner: _Run, index: int, long_side: int) -> None:
        cfg = owner.config
        h, w = fit_long_side(int(owner.content.shape[-2]), int(owner.content.shape[-1]), long_side)
        self.content = resize(owner.content, h, w)
        seen = color.luminance(self.content) if cfg.preserve_colors == "luminance" else self.content
        style_side = max(min_input_size(cfg.style_layers), round(long_side * cfg.style_scale))
        styles = [owner.prepare_style(resize_long(s, style_side), self.content) for s in owner.styles]
        content_t = owner.targets.content(seen, cfg.content_layers)
        style_ts = [owner.targets.style(s, cfg.style_layers) for s in styles]
        device = owner.device
        content_t = {k: v.to(device) for k, v in content_t.items()}
        style_ts = [
            {k: dataclasses.replace(v, moment=v.moment.to(device), mean=v.mean.to(device)) for k, v in t.items()}
            for t in style_ts
        ]
        if owner.style_masks is None:
            regions = [StyleRegion(blend(style_ts, owner.blend_weights))]
        else:
            regions = [
                StyleRegion(t, resize(m, h, w, kind="mask").to(device))
                for t, m in zip(style_ts, owner.style_masks, strict=True)
            ]
        self.objective = Objective(owner.net, content_t, regions, cfg).accelerate(device)
        self.seen = seen.to(device)
        self.keep = None if owner.content_mask is None else resize(owner.content_mask, h, w, kind="mask").to(device)

    def compose(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels where the content mask keeps the photo stay the photo's; the optimiser owns the rest."""
        if self.keep is None:
            return pixels
        return self.seen * self.keep + pixels * (1 - self.keep)


class _Run:
    def __init__(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        config: StyleConfig,
        net: VGGFeatures,
        targets: TargetSource,
        style_masks: Sequence[torch.Tensor] | None,
        content_mask: torch.Tensor | None,
        sync_every: int | None = None,
    ) -> None:
        if content.ndim != 4 or content.shape[:2] != (1, 3):
            raise ConfigError(f"content must be a (1, 3, H, W) tensor, not {tuple(content.shape)}")
        if not styles:
            raise ConfigError("at least one style image is needed")
        smallest = min_input_size(config.layers)
        for what, image in (("content", content), *(("style", s) for s in styles)):
            if min(image.shape[-2:]) < 1:
                raise ImageError(f"the {what} image is empty")
        self.config = config
        self.device = resolve_device(config.device)
        if config.cuda_graph == "on" and self.device.type != "cuda":
            raise ProviderError("--cuda-graph on needs a CUDA device; use --cuda-graph auto or off on CPU")
        #: Steps queued between reads of the losses: 1 on CPU (no cost), more on CUDA (the GPU never idles).
        self.sync_every = sync_every or (GPU_SYNC_EVERY if self.device.type == "cuda" else 1)
        configure_precision(self.device, config.precision)
        self.content = content.float()
        self.styles = [s.float() for s in styles]
        self.net = net.to(self.device)
        self.targets = targets
        self.blend_weights = normalise_blend(config.style_blend_weights, len(styles))
        if style_masks is not None and len(style_masks) != len(styles):
            raise ConfigError(f"{len(style_masks)} masks for {len(styles)} styles; give one --mask per --style")
        self.style_masks = (
            None
            if style_masks is None
            else [_check_mask(m, content, f"mask {i + 1}") for i, m in enumerate(style_masks)]
        )
        self.content_mask = None if content_mask is None else _check_mask(content_mask, content, "content mask")
        h, w = fit_long_side(int(content.shape[-2]), int(content.shape[-1]), config.scale_sizes()[0])
        self.final_size = fit_long_side(int(content.shape[-2]), int(content.shape[-1]), config.size)
        check_fits(*self.final_size, config, self.device)
        if min(h, w) < smallest:
            raise ImageError(
                f"the content image would be {w}x{h} px, below the network's minimum of {smallest} px a side "
                f"for layer {max(config.layers, key=lambda n: min_input_size([n]))}; use a larger --size "
                "or a less elongated image"
            )

    def prepare_style(self, style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        mode = self.config.preserve_colors
        if mode == "histogram":
            return color.match_histogram(style, content)
        if mode == "luminance":
            return color.luminance(style)
        return style


def _start(config: StyleConfig, scale: _Scale, init: torch.Tensor | None) -> torch.Tensor:
    """What a single-scale run starts from at this scale's size."""
    h, w = scale.content.shape[-2:]
    if init is not None:
        return resize(init.float(), int(h), int(w))
    if config.init == "random":
        gen = torch.Generator().manual_seed(config.seed)
        return torch.rand(1, 3, int(h), int(w), generator=gen)
    return scale.seen.detach().cpu()


#: The coarse scale's change is handed on blurred to this fraction of the coarse scale's resolution: its layout
#: and colours, not its texture (README, Quality controls; measured in the Benchmarks).
HANDOFF_SMOOTHING = 8


def handoff(previous: torch.Tensor, start: torch.Tensor, smoothing: float | None = None) -> torch.Tensor:
    """The next scale's first image: ``start``'s fine detail plus the coarse result's change to it, smoothed.

    Upsampling the coarse result alone gives a blurred image, and a deep content layer sees the photo's fine
    detail gone: at 512 px the content term jumped twentyfold at the hand-off and the fine scale needed more steps
    than a cold start (189 against 100, tübingen + starry night). So the start image's detail (the photo, or an
    --init-image) is kept and the coarse change added to it, a Laplacian-pyramid step.

    The change is first reduced to 1/``smoothing`` of the coarse resolution: what the coarse scale is for is the
    arrangement of colour and shape, which the fine scale's receptive fields cannot see whole. Its texture is
    tuned to the coarse sampling; upsampled, it is a texture twice too large that the fine scale has to unpick,
    and the run settled higher: with the change handed on whole, three scales reached the single-scale loss after
    100 steps at 512 px in 0.94x the single-scale time; smoothed by 8, in 1.34x (bench/reports/cpu-2core-multiscale/).
    """
    smoothing = HANDOFF_SMOOTHING if smoothing is None else smoothing
    h, w = start.shape[-2:]
    start = start.to(previous.device)
    ph, pw = int(previous.shape[-2]), int(previous.shape[-1])
    change = previous - resize(start, ph, pw)
    if smoothing > 1:
        small = (max(1, round(ph / smoothing)), max(1, round(pw / smoothing)))
        change = F.interpolate(change, size=small, mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(change, size=(int(h), int(w)), mode="bicubic", align_corners=False)
    return (start + up).clamp(0.0, 1.0)


def _initial(
    config: StyleConfig, scale: _Scale, previous: torch.Tensor | None, init: torch.Tensor | None
) -> torch.Tensor:
    if previous is None:
        return _start(config, scale, init)
    if init is None and config.init == "random":
        # White noise has no detail worth keeping: the coarse result, upsampled, is the better start.
        return resize(previous, *_hw(scale.content))
    return handoff(previous, _start(config, scale, init))


def stylize(
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    *,
    config: StyleConfig,
    net: VGGFeatures,
    targets: TargetSource,
    callback: Callback | None = None,
    init_image: torch.Tensor | None = None,
    style_masks: Sequence[torch.Tensor] | None = None,
    content_mask: torch.Tensor | None = None,
    resume: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    sync_every: int | None = None,
) -> StylizeResult:
    """Stylize ``content`` (1, 3, H, W) float32 RGB in [0, 1] with ``styles`` (each (1, 3, h, w) in [0, 1]).

    The output's long side is ``config.size`` and its aspect ratio the content's. ``net`` is the torch
    VGG the gradients flow through; ``targets`` supplies the fixed targets (ONNX Runtime, maybe cached).
    ``style_masks`` ((1, 1, H, W) each, one per style) confine each style to its region;
    ``content_mask`` marks where the photo is kept unstylized. ``resume`` continues from a result's
    ``checkpoint``; ``should_stop`` is polled between steps (signal handlers set it) to stop cleanly.
    """
    torch.manual_seed(config.seed)
    run = _Run(content, styles, config, net, targets, style_masks, content_mask, sync_every)
    sizes = config.scale_sizes()
    result = StylizeResult(image=content)
    image: torch.Tensor | None = None
    for index, long_side in enumerate(sizes):
        if resume is not None and index < int(resume["scale"]):
            continue
        scale = _Scale(run, index, long_side)
        last = index == len(sizes) - 1
        steps = config.steps if last else (config.scale_steps if config.scale_steps is not None else config.steps // 2)
        state, first = None, 1
        if resume is not None and index == int(resume["scale"]):
            start, state, first = resume["image"], resume["optimizer"], int(resume["step"]) + 1
        else:
            start = _initial(config, scale, image, init_image)
        try:
            out = _optimize_scale(
                run, scale, start, steps, state, first, callback, result, index, len(sizes), should_stop
            )
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            raise out_of_memory_error(*_hw(scale.content), config, run.device) from exc
        except RuntimeError as exc:
            if "can't allocate memory" in str(exc) or "out of memory" in str(exc):
                raise out_of_memory_error(*_hw(scale.content), config, run.device) from exc
            raise
        image = out.image
        result.recoveries += out.recoveries
        result.checkpoint = {
            "scale": index,
            "step": out.steps_done,
            "optimizer": out.optimizer_state,
            "image": (out.pixels if out.pixels is not None else out.image).cpu(),
        }
        if out.interrupted:
            result.interrupted = True
            break
    if image is None:
        raise ConfigError("nothing to do: the checkpoint is already past the last scale")
    result.image = _finish(run, image).cpu()
    return result


def _hw(image: torch.Tensor) -> tuple[int, int]:
    return int(image.shape[-2]), int(image.shape[-1])


def _optimize_scale(
    run: _Run,
    scale: _Scale,
    start: torch.Tensor,
    steps: int,
    state: dict[str, Any] | None,
    first: int,
    callback: Callback | None,
    result: StylizeResult,
    index: int,
    count: int,
    should_stop: Callable[[], bool] | None,
) -> OptimizeResult:
    cfg = run.config
    return optimize(
        scale.objective,
        start.to(run.device),
        steps=steps,
        optimizer=cfg.optimizer,
        lr=cfg.learning_rate,
        history=cfg.lbfgs_history,
        callback=_scale_callback(callback, result, index, count, run),
        compose=scale.compose,
        optimizer_state=state,
        first_step=first,
        should_stop=should_stop,
        sync_every=run.sync_every,
        cuda_graph=cfg.cuda_graph if run.device.type == "cuda" else "off",
    )


def _finish(run: _Run, image: torch.Tensor) -> torch.Tensor:
    if run.config.preserve_colors == "luminance":
        content = resize(run.content, *image.shape[-2:]).to(image.device)
        return color.recombine(image, content)
    return image


def _scale_callback(callback: Callback | None, result: StylizeResult, index: int, count: int, run: _Run) -> Callback:
    def on_step(step: Step, image: Callable[[], torch.Tensor]) -> None:
        event = dataclasses.replace(step, scale=index, scales=count)
        result.steps.append(event)
        if callback is not None:
            callback(event, lambda: _finish(run, image()).cpu())

    return on_step
