"""What a session reads besides its photos: the styles, their masks, the content mask and the init image, as
files or tensors, loaded once and checked before any model is opened."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from nst_engine import images
from nst_engine.config import NAMED_INITS, StyleConfig
from nst_engine.memory import check_style_fits
from nst_engine.plan import check_mask_count
from nst_engine.provenance import Provenance
from nst_engine.records import RunRecord
from nst_engine.resize import resize_long
from nst_engine.spec import ModelSpec

ImageInput = str | Path | torch.Tensor


def label(item: ImageInput) -> str:
    """How a trace names an input: its path, or ``<tensor>``."""
    return "<tensor>" if isinstance(item, torch.Tensor) else str(item)


def _mask(image: torch.Tensor) -> torch.Tensor:
    return image.mean(dim=1, keepdim=True) if image.shape[1] == 3 else image  # white = 1


class Inputs:
    """A session's styles (at the style size), masks, content mask and init image, loaded; the files among them."""

    def __init__(
        self,
        config: StyleConfig,
        spec: ModelSpec,
        styles: Sequence[ImageInput],
        masks: Sequence[ImageInput] | None = None,
        content_mask: ImageInput | None = None,
        init_image: ImageInput | None = None,
    ) -> None:
        check_mask_count(masks, styles)
        if init_image is None and config.init not in NAMED_INITS:
            init_image = Path(config.init)
        self.config, self.spec = config, spec
        self._preloaded: dict[Path, torch.Tensor] = {}
        self.style_names = [label(s) for s in styles]
        self.mask_paths = [Path(m) for m in masks or () if isinstance(m, (str, Path))]
        self.content_mask_path = Path(content_mask) if isinstance(content_mask, (str, Path)) else None
        #: Files this session reads: nothing it writes may be one of them.
        self.files = [
            Path(p)
            for p in [*styles, *(masks or ()), content_mask, init_image, spec.model]
            if isinstance(p, (str, Path))
        ]
        side = max(1, round(config.size * config.style_scale))
        self.styles = [self.load(s, side) for s in styles]
        for style in self.styles:  # before ONNX Runtime allocates anything for them
            check_style_fits(int(style.shape[-2]), int(style.shape[-1]), config)
        self.masks = [_mask(self.load(m, None)) for m in masks] if masks else None
        self.content_mask = _mask(self.load(content_mask, None)) if content_mask is not None else None
        self.init = self.load(init_image, None) if init_image is not None else None

    def load(self, item: ImageInput, long_side: int | None) -> torch.Tensor:
        """An image as a (1, C, H, W) float tensor in [0, 1], its long side ``long_side`` (None: as it is)."""
        if isinstance(item, Path) and item in self._preloaded:
            return self._preloaded.pop(item)
        if isinstance(item, torch.Tensor):
            image = item.detach().float().cpu()
            return image if long_side is None else resize_long(image, long_side)
        return images.load(item, long_side, self.config.max_input_pixels)

    def preload(self, path: Path) -> None:
        """Read a photo now (a bad file fails before the model opens, maybe an export); ``load`` hands it over."""
        self._preloaded[path] = self.load(path, self.config.size)

    @functools.cached_property
    def provenance(self) -> Provenance:
        """What made this session's outputs: the inputs by content and the settings (``engine.provenance``)."""
        return Provenance(self.config, self.spec, self.styles, self.masks, self.content_mask, self.init)

    def run_record(self, content: ImageInput, out: Path, preset: str | None) -> RunRecord:
        """What a checkpoint keeps so that ``Session.resume`` can rerun this image alone: its files and model, as
        absolute paths."""
        spec = self.spec
        model = None if spec.model is None else spec.model.resolve()
        cache = None if spec.cache_dir is None else spec.cache_dir.resolve()
        return RunRecord(
            None if isinstance(content, torch.Tensor) else Path(content).resolve(),
            out.resolve(),
            tuple(Path(s).resolve() for s in self.style_names if s != "<tensor>"),
            tuple(p.resolve() for p in self.mask_paths),
            None if self.content_mask_path is None else self.content_mask_path.resolve(),
            ModelSpec(model, spec.weights, spec.network, spec.input_convention, spec.provider, cache, spec.use_cache),
            preset,
        )
