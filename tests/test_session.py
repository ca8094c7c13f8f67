"""The session: what it writes and records (outputs with how they were made, checkpoints with their run record,
the trace), what it skips, and how a stop request ends a run. Resume: tests/test_checkpoint.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nst_engine.api import ModelSpec, Session, StyleConfig
from nst_engine.checkpoint import Checkpoint
from nst_engine.errors import ConfigError
from nst_engine.events import Event, ImageDone, ImageSkipped, ImageStarted, Note, ScaleStarted, StepDone
from nst_engine.jobs import Job

SIZE = 40


def _session(config: StyleConfig, style: Path, model_path: Path, **kwargs: object) -> Session:
    return Session(config, [style], model=ModelSpec(model=model_path), **kwargs)  # type: ignore[arg-type]


def test_an_output_made_the_same_way_is_skipped_and_one_made_otherwise_stops_the_run(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    content, style = pair
    job = Job(content, tmp_path / "out.png")
    config = StyleConfig(size=SIZE, steps=2)
    (first,) = _session(config, style, model_path).run([job, Job(content, tmp_path / "b.png")])[:1]
    assert first.status == "done"
    events: list[Event] = []
    again = _session(config, style, model_path, on_event=events.append).run([job, Job(content, tmp_path / "b.png")])
    assert [o.status for o in again] == ["skipped", "skipped"]
    skips = [e for e in events if isinstance(e, ImageSkipped)]
    assert len(skips) == 2 and "made with these settings" in skips[0].reason
    made = job.output.read_bytes()
    with pytest.raises(ConfigError, match=r"other settings \(steps\).*--overwrite"):
        _session(config.replace(steps=3), style, model_path).run([job, Job(content, tmp_path / "b.png")])
    assert job.output.read_bytes() == made


def test_the_trace_holds_the_model_and_precision_then_the_image_its_scales_and_steps(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    content, style = pair
    events: list[Event] = []
    session = _session(StyleConfig(size=64, steps=2, scales=2, scale_steps=1), style, model_path,
                       on_event=events.append)  # fmt: skip
    session.run([Job(content, tmp_path / "out.png")], trace=tmp_path / "trace.json")
    data = json.loads((tmp_path / "trace.json").read_text())
    assert {"engine_version", "weights", "model", "device", "precision", "cache", "targets"} <= set(data)
    assert data["precision"]["used"] in ("fp32", "bf16") and data["precision"]["why"]
    assert [s["scale"] for s in data["scales"]] == [0, 1] and [s["step"] for s in data["steps"]] == [1, 2, 3]
    assert data["output"] == str(tmp_path / "out.png") and data["status"] == "done"
    kinds = [type(e) for e in events if not isinstance(e, Note)]
    assert kinds == [ImageStarted, ScaleStarted, StepDone, ScaleStarted, StepDone, StepDone, ImageDone]


def test_a_stop_request_writes_the_image_so_far_and_a_checkpoint_that_can_stand_alone(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    content, style = pair

    def stop_at_two(event: Event) -> None:
        if isinstance(event, StepDone) and event.record["step"] == 2:
            session.stop("enough")

    session = _session(StyleConfig(size=SIZE, steps=5), style, model_path, on_event=stop_at_two)
    (outcome,) = session.run([Job(content, tmp_path / "out.png")])
    assert outcome.status == "interrupted" and len(outcome.steps) == 2 and (tmp_path / "out.png").is_file()
    assert outcome.checkpoint == tmp_path / "out.png.ckpt"
    record = Checkpoint.read(outcome.checkpoint).run
    assert record is not None and record.stands_alone
    assert (record.content, record.output, record.styles) == (content.resolve(), (tmp_path / "out.png").resolve(),
                                                              (style.resolve(),))  # fmt: skip
    assert record.spec.model == model_path.resolve()
