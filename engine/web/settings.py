"""What ``nst-engine serve`` was started with, and the state its routes share while it runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from nst_engine.config import StyleConfig
from nst_engine.export.model_file import ModelInfo
from nst_engine.spec import ModelSpec
from nst_engine.web.guard import AllowedHosts
from nst_engine.web.jobs import Hub, JobQueue
from nst_engine.web.uploads import Uploads

# Resolved: an editable install links each file, and StaticFiles serves no file through a link out of its folder.
STATIC = Path(__file__).resolve().parent / "static"
SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
#: The settings the page has a field for.
PAGE_FIELDS = (
    "size",
    "steps",
    "style_weight",
    "preserve_colors",
    "style_loss",
    "content_weight",
    "seed",
    "init",
    "scales",
)
#: How many coarse-to-fine scales a page's job may ask for.
MAX_PAGE_SCALES = 4


def page_defaults(config: StyleConfig) -> dict[str, Any]:
    fields = ("style_weight", "preserve_colors", "style_loss", "content_weight", "seed", "init", "scales")
    return {"size": 256, "steps": 100} | {name: getattr(config, name) for name in fields}


def samples_in(folder: Path | None) -> dict[str, Path]:
    """The images directly in ``folder``, by file name."""
    if folder is None:
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES}


@dataclass
class ServerSettings:
    """What ``nst-engine serve`` was started with."""

    spec: ModelSpec  # --model, or --weights (each job's layers and pooling exported into the cache once)
    info: ModelInfo  # of the model opened at start-up, for the default settings
    samples: dict[str, Path] = field(default_factory=dict)  # name shown -> file
    max_size: int = 1024
    max_steps: int = 2000
    max_queued: int = 8
    max_upload_bytes: int = 32 << 20
    max_pixels: int = 8192 * 8192
    preview_every: float = 0.2
    max_history: int = 32  # finished jobs kept (results on disk); the oldest is dropped
    hosts: AllowedHosts = field(default_factory=lambda: AllowedHosts("127.0.0.1"))
    # The quick-start run's size and steps (a first picture in a minute on a CPU), the engine's own weights.
    defaults: dict[str, Any] = field(default_factory=lambda: page_defaults(StyleConfig()))


@dataclass
class WebState:
    """What the routes of one running app share: its settings, the event hub, and (between start-up and
    shutdown) the job queue, the uploads and their temporary folder."""

    settings: ServerSettings
    hub: Hub = field(default_factory=Hub)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    folder: Path | None = None
    running: tuple[JobQueue, Uploads] | None = None

    @property
    def queue(self) -> JobQueue:
        assert self.running is not None, "the app has not started"
        return self.running[0]

    @property
    def uploads(self) -> Uploads:
        assert self.running is not None, "the app has not started"
        return self.running[1]


def web_state(request: Request) -> WebState:
    """The state of the app serving ``request`` (a FastAPI dependency)."""
    state: WebState = request.app.state.web
    return state
