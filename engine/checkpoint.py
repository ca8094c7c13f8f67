"""Checkpoints of an interrupted run: the image being optimised, the optimiser's state, where it stopped and the
settings. Saved with torch.save and read back with ``weights_only=True`` (plain tensors and numbers only)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

import engine
from engine.config import StyleConfig
from engine.errors import ConfigError
from engine.files import write_atomic
from engine.stylize import StylizeResult

FORMAT = 2  # 2: the optimiser state is device tensors only
#: Settings that may differ between the interrupted run and its continuation.
MAY_CHANGE = {"steps", "device"}


def checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name + ".ckpt")


def save_checkpoint(output: Path, result: StylizeResult, config: StyleConfig) -> Path:
    state = result.checkpoint
    data = {
        "format": FORMAT,
        "engine_version": engine.__version__,
        "settings": json.dumps(config.to_dict()),
        "scale": int(state["scale"]),
        "step": int(state["step"]),
        "image": state["image"].detach().cpu(),
        "optimizer": state["optimizer"],
    }
    buffer = io.BytesIO()
    torch.save(data, buffer)
    path = checkpoint_path(output)
    write_atomic(path, buffer.getvalue())
    return path


def load_checkpoint(path: Path, config: StyleConfig) -> dict[str, Any]:
    """Read a checkpoint and check it was made with the same settings as this run."""
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"'{path}' is not a readable nst-engine checkpoint ({type(exc).__name__})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"'{path}' is not an nst-engine checkpoint of format {FORMAT}")
    saved = json.loads(data["settings"])
    now = config.to_dict()
    differ = sorted(k for k in now if k not in MAY_CHANGE and json.dumps(saved.get(k)) != json.dumps(now[k]))
    if differ:
        raise ConfigError(
            f"checkpoint '{path}' was made with other settings ({', '.join(differ)}); resume with the same options"
        )
    return {"scale": data["scale"], "step": data["step"], "image": data["image"], "optimizer": data["optimizer"]}
