"""The Ray actors' bodies: one session each, opened once from what the driver shared, then task after task."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import StyleTransferError
from nst_engine.flow import FlowCache
from nst_engine.session import Opener, Session
from nst_engine.spec import ModelSpec
from nst_engine.video import VideoRun
from nst_engine.video_settings import VideoSettings


class Worker:
    """A Ray actor's body: one session, opened once, then image after image."""

    def __init__(
        self,
        config: StyleConfig,
        model_bytes: bytes,
        styles: list[torch.Tensor],
        masks: list[torch.Tensor] | None,
        keep: torch.Tensor | None,
        shared: dict[Any, Any],
        threads: int,
        preset: str | None,
        opener: Opener,
        cache: tuple[bool, Path | None],
    ) -> None:
        self.threads = max(1, threads)
        self.pin_threads()
        folder = Path(tempfile.mkdtemp(prefix="nst-engine-worker-"))
        model = folder / "model.onnx"
        model.write_bytes(model_bytes)
        # The driver's kind of target source (cached or not), so the shared targets' keys are this one's keys.
        spec = ModelSpec(model=model, use_cache=cache[0], cache_dir=cache[1])
        # The driver's opener (a module-level function, sent by reference): the cluster opens no model itself.
        self.session = Session(config, styles, opener=opener, model=spec, masks=masks, content_mask=keep,
                               preset=preset)  # fmt: skip
        self.session.open()
        self.session.targets.preload(shared)
        # Opened, the model is in memory (ONNX Runtime's session, the torch module): the copy is not kept. An actor
        # is killed, not closed, so anything left here would stay in the temporary folder for good.
        shutil.rmtree(folder, ignore_errors=True)

    def pid(self) -> int:
        return os.getpid()

    def pin_threads(self) -> None:
        """Set torch's threads in the thread that runs this call: OpenMP keeps its thread count per calling
        thread, and Ray may run an actor's calls on another thread than the one that built it."""
        torch.set_num_threads(self.threads)

    def stylize(self, content: torch.Tensor) -> tuple[str, Any, str, float]:
        start = time.perf_counter()
        self.pin_threads()
        try:
            done = self.session.stylize(content, None)
        except StyleTransferError as exc:
            return "failed", None, str(exc), time.perf_counter() - start
        image = None if done.image is None else done.image.numpy()
        return done.status, image, done.message, time.perf_counter() - start


class VideoWorker(Worker):
    """A worker for clips: its session and a video runner with no frames on disk (``VideoRun.chunk``)."""

    def __init__(self, *shared: Any, settings: VideoSettings) -> None:
        super().__init__(*shared)
        self.video = VideoRun(self.session, settings, FlowCache(None), lambda _done: None)

    def chunk(
        self, frames: list[np.ndarray], given: list[bytes], ahead: tuple[np.ndarray, bytes] | None = None
    ) -> list[bytes] | None:
        self.pin_threads()
        return self.video.chunk(frames, given, ahead)
