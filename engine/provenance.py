"""What made an output: a fingerprint of the photo, the inputs (by content) and every setting, written into the
output file (a PNG iTXt chunk or a JPEG comment), so that a rerun skips only the outputs made the same way and
stops, in one line, before replacing one made another way."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nst_engine import images
from nst_engine.cache import pixels_sha256
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.files import file_sha256
from nst_engine.jobs import Job, may_replace
from nst_engine.spec import ModelSpec


def _parse_note(text: str | None) -> dict[str, Any] | None:
    try:
        found = json.loads(text) if text else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class Provenance:
    """What shapes a session's pictures besides the photo: its settings, model and loaded inputs."""

    def __init__(
        self,
        config: StyleConfig,
        spec: ModelSpec,
        styles: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor] | None,
        content_mask: torch.Tensor | None,
        init: torch.Tensor | None,
    ) -> None:
        self.config, self.spec = config, spec
        self._inputs = (list(styles), list(masks or ()), content_mask, init)

    @functools.cached_property
    def inputs_identity(self) -> dict[str, Any]:
        """The styles, masks and init image as loaded (their pixels), and the model (its file's bytes, or the
        weights'), by content."""
        styles, masks, keep, init = self._inputs
        spec = self.spec
        weights_file = Path(spec.weights)
        return {
            "styles": [pixels_sha256(t) for t in styles],
            "masks": [pixels_sha256(t) for t in masks],
            "content_mask": None if keep is None else pixels_sha256(keep),
            "init": None if init is None else pixels_sha256(init),
            "model": {
                "weights": spec.weights,
                "weights_sha256": file_sha256(weights_file) if weights_file.is_file() else None,
                "model_sha256": None if spec.model is None else file_sha256(spec.model),
                "network": spec.network,
                "input_convention": spec.input_convention,
            },
        }

    def output_note(self, content: str | Path | torch.Tensor) -> str:
        """What an output of ``content`` records of how it was made: a fingerprint of the photo, the inputs and
        every setting, and the settings themselves (so that a rerun with other settings can say which differ)."""
        photo = pixels_sha256(content) if isinstance(content, torch.Tensor) else file_sha256(Path(content))
        settings = self.config.to_dict()
        made = {"content": photo, "inputs": self.inputs_identity, "settings": settings}
        fingerprint = hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()
        return json.dumps({"fingerprint": fingerprint, "settings": settings}, sort_keys=True)

    def sort_existing(
        self, jobs: Sequence[Job], overwrite: bool, resume: Path | None
    ) -> tuple[list[Job], dict[Job, str]]:
        """The jobs to run, and the existing outputs to skip with why. An existing output is skipped only when
        it records that it was made with these settings and inputs (or records nothing: another tool's file, a
        TIFF); one made with other settings stops the batch before anything runs, saying how to write both."""
        todo = [j for j in jobs if may_replace(j.output, overwrite, resume)]
        skipped: dict[Job, str] = {}
        others: list[tuple[Job, list[str]]] = []
        for job in jobs:
            if job in todo:
                continue
            found = _parse_note(images.read_note(job.output))
            if found is None:
                skipped[job] = "exists, with no record of its settings (--overwrite to redo it)"
            elif found.get("fingerprint") == json.loads(self.output_note(job.content))["fingerprint"]:
                skipped[job] = "exists, made with these settings and inputs"
            else:
                recorded = found.get("settings")
                before: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
                now = json.loads(json.dumps(self.config.to_dict()))  # as it reads back: tuples become lists
                others.append((job, sorted(k for k in now if before.get(k) != now[k])))
        if others:
            changed = sorted({k for _, keys in others for k in keys})
            what = f"other settings ({', '.join(changed[:5])})" if changed else "other inputs (photo, styles or model)"
            raise ConfigError(
                f"{len(others)} of the outputs exist from a run with {what}, e.g. '{others[0][0].output}'; pass "
                "--overwrite to replace them, or --name '{stem}_{style}_2.png' (or another -o) to keep both"
            )
        return todo, skipped
