"""What a run records, apart from the run itself: the run record a checkpoint keeps (so that ``--resume`` alone can
rerun the image), one record per step, one per image, and the trace file they make (``engine.progress`` makes
them as a run goes). Each is a typed value that
writes and reads itself; the session fills them in (``engine.session``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nst_engine
from nst_engine.errors import ConfigError
from nst_engine.files import read_limited, write_atomic
from nst_engine.spec import ModelSpec
from nst_engine.targets import TargetRecord, target_summary

if TYPE_CHECKING:
    from nst_engine.opened import OpenedModel
    from nst_engine.optim.loop import Step

#: No trace this engine writes is larger (a step is about 300 bytes); a bigger file is not read back.
MAX_TRACE_BYTES = 256 << 20

_TEXT = ("output", "weights", "provider")
_OPTIONAL = ("content", "model", "network", "input_convention", "cache_dir", "content_mask", "preset")
_LISTS = ("styles", "masks")


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


@dataclass(frozen=True)
class RunRecord:
    """The files and the model one image was made from, as absolute paths: what ``Session.resume`` reopens."""

    content: Path | None  # None: the content was a tensor, so the checkpoint cannot stand alone
    output: Path
    styles: tuple[Path, ...] = ()
    masks: tuple[Path, ...] = ()
    content_mask: Path | None = None
    spec: ModelSpec = field(default_factory=ModelSpec)
    preset: str | None = None

    @property
    def stands_alone(self) -> bool:
        """Whether the record names every input a rerun needs (files, not tensors)."""
        return self.content is not None and bool(self.styles)

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "content": None if self.content is None else str(self.content),
            "output": str(self.output),
            "styles": [str(p) for p in self.styles],
            "masks": [str(p) for p in self.masks],
            "content_mask": None if self.content_mask is None else str(self.content_mask),
            "model": None if spec.model is None else str(spec.model),
            "weights": spec.weights,
            "network": spec.network,
            "input_convention": spec.input_convention,
            "provider": spec.provider,
            "cache_dir": None if spec.cache_dir is None else str(spec.cache_dir),
            "use_cache": spec.use_cache,
            "preset": self.preset,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> RunRecord:
        """A record read back from a file: a crafted one is refused in one line, not as a TypeError later."""
        bad = [k for k in _TEXT if k in data and not isinstance(data[k], str)]
        bad += [k for k in _OPTIONAL if data.get(k) is not None and not isinstance(data[k], str)]
        bad += [k for k in _LISTS if k in data and not _texts(data[k])]
        bad += ["use_cache"] if not isinstance(data.get("use_cache", True), bool) else []
        bad += ["output"] if "output" not in data else []
        if bad:
            raise ConfigError(
                f"{where} is damaged (its record of '{bad[0]}' is not a path or name); rerun the original command"
            )
        spec = ModelSpec(
            _path(data.get("model")),
            data.get("weights", "vgg19"),
            data.get("network"),
            data.get("input_convention"),
            data.get("provider", "auto"),
            _path(data.get("cache_dir")),
            data.get("use_cache", True),
        )
        return cls(
            _path(data.get("content")),
            Path(data["output"]),
            tuple(Path(p) for p in data.get("styles", [])),
            tuple(Path(p) for p in data.get("masks", [])),
            _path(data.get("content_mask")),
            spec,
            data.get("preset"),
        )


def step_record(step: Step, count: int, elapsed: float) -> dict[str, Any]:
    """One step as the trace keeps it: its number in the whole run, where it ran, when, and its losses."""
    record: dict[str, Any] = {
        "step": count,
        "scale": step.scale,
        "scale_step": step.step,
        "size": list(step.size),
        "elapsed_s": round(elapsed, 4),
        "losses": step.losses,
    }
    if step.event:
        record["event"] = step.event
    return record


@dataclass
class ImageTrace:
    """One image's part of a trace: what it was made from and how, and every step."""

    content: str
    output: Path | None
    styles: list[str]
    settings: dict[str, Any]
    preset: str | None
    targets: dict[str, Any]
    steps: list[dict[str, Any]]
    result: dict[str, Any]
    scales: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.resumed_from is None else {"resumed_from": self.resumed_from}
        return extra | {
            "content": self.content,
            "output": None if self.output is None else str(self.output),
            "styles": self.styles,
            "settings": self.settings,
            "preset": self.preset,
            "targets": self.targets,
            "steps": self.steps,
            "result": self.result,
            "scales": self.scales,
        }


@dataclass
class Trace:
    """A run's JSON trace: what it ran on (``header``: engine version, weights, model, device, precision, cache,
    targets), then one image's record merged in, or, for a batch, one entry per image under ``runs``."""

    header: dict[str, Any]
    runs: list[dict[str, Any]]
    batch: bool

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.header)
        if not self.batch and self.runs and "steps" in self.runs[0]:
            data.update(self.runs[0])
        else:
            data.update(batch=True, runs=self.runs)
        return data

    def write(self, path: Path) -> None:
        write_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @staticmethod
    def steps_before(path: Path, output: Path) -> list[dict[str, Any]]:
        """The steps an interrupted run of ``output`` recorded in the trace at ``path``, which a resumed run
        continues; none when the file is missing, another run's, finished, or not a trace."""
        if not path.is_file():
            return []
        try:
            data = json.loads(read_limited(path, MAX_TRACE_BYTES))
            same = Path(data["output"]).resolve() == output.resolve() and data["result"]["interrupted"]
            return list(data["steps"]) if same else []
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return []


def trace_header(
    model: OpenedModel, device: str, precision: dict[str, str], spec: ModelSpec, targets: Sequence[TargetRecord]
) -> dict[str, Any]:
    """What a trace records first: the engine's version, the weights and model, device, precision and cache."""
    info = model.info
    return {
        "engine_version": nst_engine.__version__,
        "weights": {
            "source": info.weights,
            "label": info.weights_label,
            "pretrained": info.pretrained,
            "sha256": info.meta.get("weights_sha256"),
            "network": info.network,
            "input_convention": info.convention,
            "feature_scale": info.feature_scale,
        },
        "model": {
            "path": str(info.path),
            "sha256": info.sha256,
            "provider": model.provider,
            "precision": model.precision,
            "provider_note": model.describe(),
        },
        "device": device,
        "precision": precision,
        "cache": "off" if not spec.use_cache else str(spec.cache),
        "targets": target_summary(targets),
    }
