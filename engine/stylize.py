"""The tensor pipeline: images and a target source in, a stylized image out. No files, no terminal, no ONNX.

The scale plan and the values a run hands around are in ``engine.plan`` (re-exported here).

``Pipeline`` holds what every content image of a run shares (settings, network, targets, styles, masks, an init
image) and checks it once; ``Pipeline.run`` stylizes one content image, coarse to fine, reporting each scale and
step to its listeners. ``engine.session`` wraps it with files, events and stop requests for every front door.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from nst_engine import color, memory
from nst_engine.cache import pixels_sha256
from nst_engine.checkpoint import Checkpoint
from nst_engine.config import StyleConfig
from nst_engine.device import choose_precision, configure_precision, resolve_device
from nst_engine.errors import ConfigError, ImageError, ProviderError
from nst_engine.layers import deepest, min_input_size, stride
from nst_engine.memory import check_fits, out_of_memory_error
from nst_engine.objective import Objective
from nst_engine.optim.loop import Callback, OptimizeResult, Step, optimize
from nst_engine.optim.registry import Tuning
from nst_engine.plan import (
    FrameGuide,
    Level,
    ScaleInfo,
    ScaleListener,
    ScalePlan,
    StylizeResult,
    check_mask,
    check_mask_count,
    handoff,
    hw,
)
from nst_engine.resize import fit_long_side, resize, resize_long
from nst_engine.targets import StyleRegion, StyleTarget, TargetSource, blend, normalise_blend
from nst_engine.tiling import TiledObjective, plan_tiles, tiled_targets
from nst_engine.vgg import CAFFE_MEAN_BGR, VGGFeatures

#: The mean pixel of Caffe's VGG preprocessing, RGB in [0, 1]: jcjohnson's ``-init random`` starts there.
MEAN_COLOUR = torch.tensor(CAFFE_MEAN_BGR[::-1]) / 255

#: Steps queued on a GPU between two reads of the losses (progress bars refresh at this rate).
GPU_SYNC_EVERY = 10

__all__ = [
    "MEAN_COLOUR", "FrameGuide", "Level", "Pipeline", "ScaleInfo", "ScaleListener", "ScalePlan", "StylizeResult",
    "check_mask", "check_mask_count", "handoff", "stylize",
]  # fmt: skip


@dataclass
class _Scale:
    """What is fixed for one scale of one content image: its sized content, objective and content mask."""

    info: ScaleInfo
    seen: torch.Tensor  # the content as the loss sees it (luminance when preserving colours), on the device
    objective: Objective
    keep: torch.Tensor | None  # the content mask at this size, on the device

    def compose(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels where the content mask keeps the photo stay the photo's; the optimiser owns the rest."""
        if self.keep is None:
            return pixels
        return self.seen * self.keep + pixels * (1 - self.keep)


@dataclass
class _Start:
    """Where a scale's optimisation begins: an image, and for a resumed run the optimiser's state and step."""

    image: torch.Tensor
    state: dict[str, torch.Tensor] | None = None
    first_step: int = 1


class Pipeline:
    """Settings, network, targets, styles, masks and an init image, checked once; ``run`` per content image."""

    def __init__(
        self,
        config: StyleConfig,
        net: VGGFeatures,
        targets: TargetSource,
        styles: Sequence[torch.Tensor],
        *,
        style_masks: Sequence[torch.Tensor] | None = None,
        content_mask: torch.Tensor | None = None,
        init_image: torch.Tensor | None = None,
        sync_every: int | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        self.tuning = tuning or Tuning()
        if not styles:
            raise ConfigError("at least one style image is needed")
        for image in styles:
            if image.ndim != 4 or image.shape[:2] != (1, 3):
                raise ConfigError(f"a style must be a (1, 3, H, W) tensor, not {tuple(image.shape)}")
            if min(image.shape[-2:]) < 1:
                raise ImageError("a style image is empty")
        check_mask_count(style_masks, styles)
        self.device = resolve_device(config.device)
        # --precision auto becomes what this device computes natively, once: everything below sees the choice.
        precision, self.precision_reason = choose_precision(config.precision, self.device)
        self.requested = config  # what checkpoints record: a resume on other hardware chooses again
        config = config.replace(precision=precision)
        self.config = config
        self.plan = ScalePlan.of(config)
        if config.cuda_graph == "on" and self.device.type != "cuda":
            raise ProviderError("--cuda-graph on needs a CUDA device; use --cuda-graph auto or off on CPU")
        #: Steps queued between reads of the losses: 1 on CPU (no cost), more on CUDA (the GPU never idles).
        self.sync_every = sync_every or (GPU_SYNC_EVERY if self.device.type == "cuda" else 1)
        configure_precision(self.device, config.precision)
        self.net = net.to(self.device)
        self.targets = targets
        self.styles = [s.float() for s in styles]
        self.blend_weights = normalise_blend(config.style_blend_weights, len(styles))
        self.style_masks = None if style_masks is None else [m.float() for m in style_masks]
        self.content_mask = None if content_mask is None else content_mask.float()
        self.init_image = None if init_image is None else init_image.float()

    # -- one content image --------------------------------------------------------------------------------------

    def run(
        self,
        content: torch.Tensor,
        *,
        on_step: Callback | None = None,
        on_scale: ScaleListener | None = None,
        resume: Checkpoint | None = None,
        should_stop: Callable[[], bool] | None = None,
        sync_every: int | None = None,
        frame: FrameGuide | None = None,
    ) -> StylizeResult:
        """Stylize ``content`` (1, 3, H, W) float32 RGB in [0, 1]; the output's long side is ``config.size``.

        ``on_step`` gets every Step (with its scale) and a function returning the image so far; ``on_scale`` each
        scale before its first step. ``resume`` continues a result's checkpoint; ``should_stop`` is polled between
        steps and ends the run cleanly, with a checkpoint. ``sync_every`` overrides how many steps are queued
        between reads of the losses (1: every step's image is that step's, as ``--save-every`` needs). ``frame``
        makes it a video frame's run (see ``FrameGuide``).
        """
        self._check_content(content)
        torch.manual_seed(self.config.seed)
        content = content.float()
        masks = (
            None
            if self.style_masks is None
            else [check_mask(m, content, f"mask {i + 1}") for i, m in enumerate(self.style_masks)]
        )
        keep = None if self.content_mask is None else check_mask(self.content_mask, content, "content mask")
        digest = pixels_sha256(content)
        if resume is not None and resume.content and resume.content != digest:
            raise ConfigError(
                "the checkpoint was made from another content image; resume with the photo it was made from"
            )
        result = StylizeResult(image=content)
        image: torch.Tensor | None = None
        for level in self.plan.todo(resume, frame):
            scale = self._scale(content, level, masks, keep, frame)
            if on_scale is not None:
                on_scale(scale.info)
            start = self._begin(scale, image, resume, frame)
            out = self._optimize(scale, start, on_step, result, should_stop, sync_every or self.sync_every)
            image = out.image
            result.recoveries += out.recoveries
            before = 0 if resume is None else resume.steps_done
            pixels = (out.pixels if out.pixels is not None else out.image).cpu()
            result.checkpoint = Checkpoint(level.index, out.steps_done, pixels, out.optimizer_state,
                                           self.requested.to_dict(), digest, before + len(result.steps))  # fmt: skip
            if out.interrupted:
                result.interrupted = True
                break
        assert image is not None
        result.image = self._finish(content, image).cpu()
        return result

    def _begin(
        self, scale: _Scale, previous: torch.Tensor | None, resume: Checkpoint | None, frame: FrameGuide | None
    ) -> _Start:
        """Where a scale's optimisation starts: the checkpoint at its own scale, a video frame's start, or the
        previous scale's result (the run's start at the first)."""
        size = scale.info.size
        if resume is not None and scale.info.index == resume.scale:
            if hw(resume.image) != size:
                raise ConfigError(
                    f"the checkpoint's image is {hw(resume.image)[1]}x{hw(resume.image)[0]} but this scale is "
                    f"{size[1]}x{size[0]}; resume with the photo it was made from"
                )
            return _Start(resume.image, resume.optimizer, resume.step + 1)
        if frame is not None and frame.init is not None:
            return _Start(self._seen(resize(frame.init, *size)).clamp(0.0, 1.0).contiguous())
        return _Start(self._initial(scale, previous))  # (previous is None for a frame: its start)

    def warm_styles(self) -> None:
        """Compute every scale's style targets now (they do not depend on the content, except with histogram
        colour matching, where nothing is done), so that they can be shared before any image runs."""
        cfg = self.config
        if cfg.preserve_colors == "histogram":
            return
        for level in self.plan.levels:
            for style in self.styles:
                sized = resize_long(style, level.style_side)
                self.targets.style(color.luminance(sized) if cfg.preserve_colors == "luminance" else sized,
                                   cfg.style_layers)  # fmt: skip

    def _check_content(self, content: torch.Tensor) -> None:
        cfg = self.config
        if content.ndim != 4 or content.shape[:2] != (1, 3):
            raise ConfigError(f"content must be a (1, 3, H, W) tensor, not {tuple(content.shape)}")
        if min(content.shape[-2:]) < 1:
            raise ImageError("the content image is empty")
        h, w = fit_long_side(*hw(content), self.plan.levels[0].long_side)
        if cfg.tile == "off":
            check_fits(*fit_long_side(*hw(content), cfg.size), cfg, self.device)
        smallest = min_input_size(cfg.layers)
        if min(h, w) < smallest:
            raise ImageError(
                f"the content image would be {w}x{h} px, below the network's minimum of {smallest} px a side "
                f"for layer {deepest(cfg.layers)}; use a larger --size or a less elongated image"
            )

    def _style(self, style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        mode = self.config.preserve_colors
        if mode == "histogram":
            return color.match_histogram(style, content)
        if mode == "luminance":
            return color.luminance(style)
        return style

    def _scale(
        self,
        content: torch.Tensor,
        level: Level,
        masks: list[torch.Tensor] | None,
        keep: torch.Tensor | None,
        guide: FrameGuide | None = None,
    ) -> _Scale:
        cfg, device = self.config, self.device
        h, w = fit_long_side(*hw(content), level.long_side)
        plan = plan_tiles(h, w, cfg, device, int(memory.available_bytes(device) * 0.9), self.net.network)
        sized = resize(content, h, w)
        seen = color.luminance(sized) if cfg.preserve_colors == "luminance" else sized
        styles = [self._style(resize_long(s, level.style_side), sized) for s in self.styles]
        with tiled_targets(self.targets, plan, stride(deepest(cfg.layers))):
            content_t = {k: v.to(device) for k, v in self.targets.content(seen, cfg.content_layers).items()}
            style_ts = [_to_device(self.targets.style(s, cfg.style_layers), device) for s in styles]
        if masks is None:
            regions = [StyleRegion(blend(style_ts, self.blend_weights))]
        else:
            regions = [
                StyleRegion(t, resize(m, h, w, kind="mask").to(device)) for t, m in zip(style_ts, masks, strict=True)
            ]
        temporal = None if guide is None else self._warped(guide, (h, w))
        if plan is None:
            objective = Objective.of(self.net, content_t, regions, cfg, temporal=temporal).accelerate(device)
        else:
            objective = TiledObjective.of(self.net, content_t, regions, cfg, temporal=temporal, plan=plan)
            objective.accelerate(device)
        kept = None if keep is None else resize(keep, h, w, kind="mask").to(device)
        steps = level.steps if guide is None else guide.steps
        info = ScaleInfo(level.index, len(self.plan.levels), (h, w), steps, plan)
        return _Scale(info, seen.to(device), objective, kept)

    def _seen(self, image: torch.Tensor) -> torch.Tensor:
        """An image as the optimiser holds it: its luminance when preserving the photo's colours that way."""
        return color.luminance(image) if self.config.preserve_colors == "luminance" else image

    def _warped(
        self, frame: FrameGuide, size: tuple[int, int]
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
        """A video frame's earlier results warped into it, at this scale's size, with the temporal weight."""
        h, w = size
        warped = [
            (self._seen(resize(image, h, w)).to(self.device), resize(sure, h, w, kind="mask").to(self.device))
            for image, sure in frame.warped
        ]
        return warped, frame.weight

    def _start(self, scale: _Scale) -> torch.Tensor:
        """What a run starts from at this scale's size when there is no coarser result."""
        h, w = hw(scale.seen)
        if self.init_image is not None:
            return resize(self.init_image, h, w)
        generator = torch.Generator().manual_seed(self.config.seed)
        if self.config.init == "random":
            return torch.rand(1, 3, h, w, generator=generator)
        if self.config.init == "mean":
            # jcjohnson/neural-style's -init random: randn * 0.001 in Caffe's mean-subtracted 0-255 space.
            noise = torch.randn(1, 3, h, w, generator=generator) * (0.001 / 255)
            return (MEAN_COLOUR.view(1, 3, 1, 1) + noise).clamp(0.0, 1.0)
        return scale.seen.detach().cpu()

    def _initial(self, scale: _Scale, previous: torch.Tensor | None) -> torch.Tensor:
        if previous is None:
            return self._start(scale)
        if self.init_image is None and self.config.init in ("random", "mean"):
            # Noise has no detail worth keeping: the coarse result, upsampled, is the better start.
            return resize(previous, *hw(scale.seen))
        return handoff(previous, self._start(scale), self.tuning.handoff_smoothing)

    def _optimize(
        self,
        scale: _Scale,
        start: _Start,
        on_step: Callback | None,
        result: StylizeResult,
        should_stop: Callable[[], bool] | None,
        sync_every: int,
    ) -> OptimizeResult:
        cfg = self.config

        def step_done(step: Step, image: Callable[[], torch.Tensor]) -> None:
            event = dataclasses.replace(step, scale=scale.info.index, scales=scale.info.count)
            result.steps.append(event)
            if on_step is not None:
                on_step(event, lambda: self._finish(scale.seen, image()).cpu())

        # Evaluations are numbered from the first step, so a resumed run draws what the whole run would have.
        scale.objective.terms.evaluations = start.first_step - 1
        graph = cfg.cuda_graph if self.device.type == "cuda" else "off"
        if scale.objective.terms.redraws and graph != "off":
            if graph == "on":
                raise ConfigError(f"--style-loss {cfg.style_loss} draws new directions every step, which a captured "
                                  "CUDA graph would freeze; use --cuda-graph auto or off")  # fmt: skip
            graph = "off"
        try:
            return optimize(
                scale.objective,
                start.image.to(self.device),
                steps=scale.info.steps,
                optimizer=cfg.optimizer,
                lr=cfg.learning_rate,
                history=scale.info.tiling.history if scale.info.tiling else cfg.lbfgs_history,
                callback=step_done,
                compose=scale.compose,
                optimizer_state=start.state,
                first_step=start.first_step,
                should_stop=should_stop,
                sync_every=sync_every,
                cuda_graph=graph,
                tuning=self.tuning,
            )
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            raise out_of_memory_error(*hw(scale.seen), cfg, self.device) from exc
        except RuntimeError as exc:
            if "can't allocate memory" in str(exc) or "out of memory" in str(exc):
                raise out_of_memory_error(*hw(scale.seen), cfg, self.device) from exc
            raise

    def _finish(self, content: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.config.preserve_colors == "luminance":
            return color.recombine(image, resize(content, *hw(image)).to(image.device))
        return image


def _to_device(target: StyleTarget, device: torch.device) -> StyleTarget:
    return {k: v.to(device) for k, v in target.items()}


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
    resume: Checkpoint | None = None,
    should_stop: Callable[[], bool] | None = None,
    sync_every: int | None = None,
    tuning: Tuning | None = None,
) -> StylizeResult:
    """One content image through a one-off ``Pipeline`` (see ``Pipeline.run``): for tests and benchmarks."""
    pipeline = Pipeline(
        config,
        net,
        targets,
        styles,
        style_masks=style_masks,
        content_mask=content_mask,
        init_image=init_image,
        tuning=tuning,
    )
    return pipeline.run(content, on_step=callback, resume=resume, should_stop=should_stop, sync_every=sync_every)
