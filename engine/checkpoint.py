"""Checkpoints of an interrupted run: the image being optimised, the optimiser's state, where it stopped and the
settings. Saved with torch.save and read back with ``weights_only=True`` (plain tensors and numbers only)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import nst_engine
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.files import special_kind, write_atomic
from nst_engine.jobs import checkpoint_path
from nst_engine.records import RunRecord

FORMAT = 2  # 2: the optimiser state is device tensors only
#: No checkpoint is larger: the image and L-BFGS's history at the largest sizes this engine optimises untiled.
MAX_BYTES = 16 << 30
#: Settings that may differ between the interrupted run and its continuation.
MAY_CHANGE = {"steps", "device"}


__all__ = ["Checkpoint", "checkpoint_path"]


@dataclass
class Checkpoint:
    """Where a run stopped: the scale and the last step done there, the optimiser's state and the raw pixels
    being optimised (before any content mask is composed in), with the settings it ran under."""

    scale: int
    step: int
    image: torch.Tensor  # (1, 3, H, W) float32, on the CPU
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    content: str = ""  # sha256 of the content image's pixels: a checkpoint continues only its own photo
    steps_done: int = 0  # steps of the whole run so far, every scale counted (the trace's step numbers go on)
    #: What the run read and wrote (content, output, styles, masks, model), so that ``--resume`` can stand alone.
    run: RunRecord | None = None

    def save(self, path: Path) -> Path:
        data = {
            "format": FORMAT,
            "engine_version": nst_engine.__version__,
            "settings": json.dumps(self.settings),
            "scale": int(self.scale),
            "step": int(self.step),
            "image": self.image.detach().cpu(),
            "optimizer": {k: v.detach() for k, v in self.optimizer.items()},
            "content": self.content,
            "steps_done": int(self.steps_done),
            "run": json.dumps({} if self.run is None else self.run.to_dict()),
        }
        buffer = io.BytesIO()
        torch.save(data, buffer)
        write_atomic(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: Path, config: StyleConfig) -> Checkpoint:
        """Read a checkpoint and check it was made with the same settings as this run."""
        found = cls.read(path)
        now = config.to_dict()
        differ = sorted(
            k for k in now if k not in MAY_CHANGE and json.dumps(found.settings.get(k)) != json.dumps(now[k])
        )
        if differ:
            raise ConfigError(
                f"checkpoint '{path}' was made with other settings ({', '.join(differ)}); "
                "resume with the same options, or with --resume alone"
            )
        return found

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        """Read a checkpoint, checking only that it is whole."""
        kind = special_kind(path)
        if kind is not None:
            raise ConfigError(f"checkpoint '{path}' is {kind}; give the .ckpt file an interrupted run wrote")
        if not path.is_file():
            raise ConfigError(
                f"checkpoint '{path}' not found (a finished run removes its checkpoint); give the .ckpt file an "
                "interrupted run wrote"
            )
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(
                f"'{path}' is {size >> 20} MiB, over the {MAX_BYTES >> 30} GiB a checkpoint of this engine can be; "
                "it is not an nst-engine checkpoint"
            )
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(f"'{path}' is not a readable nst-engine checkpoint ({type(exc).__name__})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"'{path}' is not an nst-engine checkpoint of format {FORMAT}")
        try:
            saved = json.loads(data["settings"])
            image, optimizer = data["image"], dict(data["optimizer"])
            scale, step = int(data["scale"]), int(data["step"])
            if not isinstance(saved, dict) or not isinstance(image, torch.Tensor) or image.ndim != 4:
                raise ValueError("settings or image of the wrong kind")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"checkpoint '{path}' is damaged ({type(exc).__name__}: {str(exc)[:60]})") from None
        try:
            found = json.loads(data.get("run", "{}"))
        except ValueError:
            raise ConfigError(f"checkpoint '{path}' is damaged (its run record is not JSON)") from None
        run = RunRecord.from_dict(found, f"checkpoint '{path}'") if isinstance(found, dict) and found else None
        content, done = str(data.get("content", "")), int(data.get("steps_done", 0))
        return cls(scale, step, image, optimizer, saved, content, done, run)
